"""Beanie document models. Every model the app stores is listed in DOCUMENT_MODELS so
that `init_beanie` registers it and creates its indexes at start-up."""

from cryptovault.documents.alerts import AlertQuotaDocument, PriceAlertDocument
from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.candles import CandleDocument
from cryptovault.documents.portfolio import PortfolioBookDocument, PortfolioSnapshotDocument
from cryptovault.documents.sessions import (
    RefreshTokenDocument,
    RevokedTokenDocument,
    SessionDocument,
)
from cryptovault.documents.trading import (
    AdjustmentDocument,
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.documents.users import (
    LoginAttemptDocument,
    PasswordResetDocument,
    UserDocument,
)
from cryptovault.documents.watchlists import WatchlistDocument

DOCUMENT_MODELS: list[type] = [
    CandleDocument,
    UserDocument,
    LoginAttemptDocument,
    PasswordResetDocument,
    SessionDocument,
    RefreshTokenDocument,
    RevokedTokenDocument,
    ApiKeyDocument,
    AuditEntryDocument,
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
    AdjustmentDocument,
    WatchlistDocument,
    PriceAlertDocument,
    AlertQuotaDocument,
    PortfolioBookDocument,
    PortfolioSnapshotDocument,
]
