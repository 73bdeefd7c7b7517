"""Beanie document models. Every model the app stores is listed in DOCUMENT_MODELS so
that `init_beanie` registers it and creates its indexes at start-up."""

from cryptovault.documents.candles import CandleDocument

DOCUMENT_MODELS: list[type] = [CandleDocument]
