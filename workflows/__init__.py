"""Temporal workflows: orchestration only, deterministic (lands with the TradeWorkflow issue)."""
