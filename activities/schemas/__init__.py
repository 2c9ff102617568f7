"""Activity arguments and results: pydantic only, safe to import in the workflow sandbox."""
