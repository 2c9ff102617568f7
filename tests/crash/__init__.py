"""Crash tests: the worker is a real subprocess, SIGKILLed in the middle of a trade."""
