"""`python -m paper_exchange`: serve with settings from the QT_PAPER_* environment."""

from paper_exchange.app import serve
from paper_exchange.config import PaperSettings

if __name__ == "__main__":
    serve(PaperSettings())
