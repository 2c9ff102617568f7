"""The exchange adapter: the one ccxt client (paper, testnet, live: `client.py`), Binance's request
weights and budgets (`weights.py`), the error classification (`errors.py`), and the parsers from
ccxt's dicts to typed records (`parse.py` → `models.py`). Nothing outside this package reads
`info[...]` of a ccxt result. `models.py` and `parse.py` import no ccxt: the workflow's schemas
use the models."""
