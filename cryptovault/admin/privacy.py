"""The viewer's own data: a full export, and account deletion (personal data erased,
the ledger kept under the now anonymous account id so the books still balance)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bson import json_util

from cryptovault.documents.common import now_ms
from cryptovault.documents.users import PasswordResetDocument, UserDocument
from cryptovault.errors import NotFound, Unauthenticated
from cryptovault.portfolio.alerts import PriceAlerts
from cryptovault.portfolio.watchlists import Watchlists
from cryptovault.security.audit import AuditLog
from cryptovault.security.identity import IdentityService
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading.engine import TradingEngine

# Fields never exported: secrets, even hashed.
SECRET_FIELDS = {
    "password_hash",
    "totp_secret",
    "totp_pending_secret",
    "recovery_codes",
    "pending_recovery_codes",
    "secret_hash",
    "token_hash",
    "applied",
}
EXPORTED = {
    "sessions": "user_id",
    "api_keys": "user_id",
    "orders": "user_id",
    "trades": "user_id",
    "ledger": "account",
    "balances": "account",
    "audit_log": "user_id",
    "watchlists": "user_id",
    "price_alerts": "user_id",
    "portfolio_snapshots": "user_id",
}


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in SECRET_FIELDS}


class Privacy:
    def __init__(
        self,
        identity: IdentityService,
        audit: AuditLog,
        trading: TradingEngine,
        watchlists: Watchlists,
        alerts: PriceAlerts,
    ) -> None:
        self.identity = identity
        self.audit = audit
        self.trading = trading
        self.watchlists = watchlists
        self.alerts = alerts

    async def export(self, viewer: Viewer, origin: Origin) -> dict[str, Any]:
        """Everything stored about the viewer, as JSON-ready data (Decimals and dates
        as relaxed Extended JSON)."""
        db = UserDocument.get_pymongo_collection().database
        user = await db["users"].find_one({"_id": viewer.user_id})
        if user is None:
            raise NotFound("No such user")
        data: dict[str, Any] = {
            "exportedAt": datetime.now(UTC).isoformat(),
            "user": _clean(user),
        }
        existing = set(await db.list_collection_names())
        for collection, field in EXPORTED.items():
            if collection in existing:
                data[collection] = [
                    _clean(d) async for d in db[collection].find({field: viewer.user_id})
                ]
        # An order's audit entries not yet copied to the audit log (trading/order_audit.py)
        # are exported with the log's (once, if one was copied between the two reads).
        logged = {e["_id"] for e in data.get("audit_log", [])}
        for order in data.get("orders", []):
            order.pop("audit_state", None)
            for entry in order.pop("audit", None) or []:
                if entry["_id"] not in logged:
                    data.setdefault("audit_log", []).append(entry)
        await self.audit.record("user.data_exported", actor=viewer, origin=origin)
        # Relaxed Extended JSON keeps exact types: {"$numberDecimal": "10.50"}.
        return json.loads(json_util.dumps(data, json_options=json_util.RELAXED_JSON_OPTIONS))

    async def delete_account(self, viewer: Viewer, password: str, origin: Origin) -> None:
        """Erase the account's personal data after confirming the password: open
        orders canceled, sessions and API keys revoked, email and secrets erased, IPs
        and user agents removed from its audit entries. The ledger, trades and orders
        stay (under the anonymous id) so the books still reconcile."""
        user = await UserDocument.get(viewer.user_id)
        if user is None:
            raise NotFound("No such user")
        if not await self.identity.hasher.verify(user.password_hash, password):
            raise Unauthenticated("Password confirmation failed")
        db = UserDocument.get_pymongo_collection().database
        now = now_ms()
        await self.identity.sessions.revoke_all(viewer.user_id, now, "account deleted")
        if viewer.token_id and viewer.expires_at:
            await self.identity.sessions.blacklist(
                viewer.token_id, viewer.user_id, viewer.expires_at
            )
        await db["api_keys"].update_many(
            {"user_id": viewer.user_id, "revoked_at": None}, {"$set": {"revoked_at": now}}
        )
        await db["users"].update_one(
            {"_id": viewer.user_id},
            {
                "$set": {
                    "email": f"deleted-{viewer.user_id}@deleted.invalid",
                    "password_hash": "!",  # matches no password
                    "frozen": True,
                    "frozen_reason": "account deleted",
                    "deleted_at": now,
                    "two_factor_enabled": False,
                    "totp_secret": None,
                    "totp_pending_secret": None,
                    "recovery_codes": [],
                    "pending_recovery_codes": [],
                    "updated_at": now,
                    "kept_session": None,
                },
                # Ends every credential, even one being issued right now.
                "$inc": {"session_epoch": 1, "key_epoch": 1},
            },
        )
        # After the account is flagged frozen: a placement in flight either is seen
        # here or refuses itself on the flag (trading.engine).
        await self.trading.cancel_all(viewer.user_id, viewer, origin, reason="account deleted")
        await db["login_attempts"].delete_many({"email": user.email})
        # A reset token mailed earlier must not give the account a password again
        # (resetPassword also refuses a deleted account, for a token made meanwhile).
        await PasswordResetDocument.find({"user_id": viewer.user_id}).delete()
        # Its orders' audit entries not yet copied to the log, then the log's.
        await db["orders"].update_many(
            {"user_id": viewer.user_id, "audit_state": {"$ne": None}},
            {"$set": {"audit.$[].ip": None, "audit.$[].user_agent": None}},
        )
        await db["audit_log"].update_many(
            {"$or": [{"user_id": viewer.user_id}, {"actor_id": viewer.user_id}]},
            {"$set": {"ip": None, "user_agent": None, "details.email": None}},
        )
        await self.watchlists.forget_user(viewer.user_id)
        await self.alerts.forget_user(viewer.user_id)
        await self.audit.record(
            "user.deleted", actor=None, user_id=viewer.user_id, target=f"user:{viewer.user_id}"
        )
