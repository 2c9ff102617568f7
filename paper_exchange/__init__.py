"""Paper exchange: a local Binance USD-M futures REST API over a replay of real candles.

The project's trading code reaches it only through ccxt's `binanceusdm` pointed at 127.0.0.1
(`exchange.client.create_exchange`). Run it with `python -m paper_exchange` (settings from
`QT_PAPER_*`, see config.py); test controls are under /_paper/ (see controls.py).
"""
