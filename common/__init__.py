"""The bottom layer: what every process shares (settings, the Temporal connection, task queue
names, Redis key names, search attributes). It imports nothing of the project above it, so any
package may import it; `tests/unit/test_layers.py` keeps it that way."""
