"""Every Redis key name the marketplace uses, built in one place.

Layout and why: each Lua script may touch only keys of one Redis Cluster hash slot, so keys are
grouped by the hash tag in braces:

    {b:MODEL}   the book of one model: its offers, indexes, reservations, change stream, health
    {p:NAME}    where each of provider NAME's offers is: offer id -> model (withdraw by offer id)
    {k:KEY_ID}  one client key: its record, budget, holds and rate counters
    {keys}      the index from a key's token hash to its id, and the list of keys
    {prov}      provider registrations and the index from bidder-token hash to provider
    {ledger}    the settlement ledger (a stream) and its idempotency marks
    {feed}      the public trade stream

A clearing record lives under its own id (no script touches two records). Pub/sub channels are
named here too. The prefix (default "auction") lets several markets, or tests, share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix; every method returns a str."""

    prefix: str = "auction"

    # -- the book of one model: slot {b:MODEL} --------------------------------------------------
    def book_tag(self, model: str) -> str:
        return f"{self.prefix}:{{b:{model}}}"

    def offer(self, model: str, ref: str) -> str:
        """Hash: one offer's fields, its prices, capacity, expiry, owning session and seq."""
        return f"{self.book_tag(model)}:offer:{ref}"

    def book_index(self, model: str) -> str:
        """Sorted set: ref -> seq (time priority) of every offer posted for the model."""
        return f"{self.book_tag(model)}:index"

    def book_expiry(self, model: str) -> str:
        """Sorted set: ref -> expires_ms, for expiry by ttl."""
        return f"{self.book_tag(model)}:expiry"

    def in_flight(self, model: str, ref: str) -> str:
        """Sorted set: reservation id -> expires_ms; its live members are requests in flight."""
        return f"{self.book_tag(model)}:inflight:{ref}"

    def tokens_window(self, model: str, ref: str) -> str:
        """Sorted set: reservation id -> ms reserved, for tokens per minute (amounts beside)."""
        return f"{self.book_tag(model)}:tpm:{ref}"

    def tokens_amounts(self, model: str, ref: str) -> str:
        """Hash: reservation id -> tokens (estimate, then actual) in the window; "" -> total."""
        return f"{self.book_tag(model)}:tpm_amounts:{ref}"

    def reservations(self, model: str) -> str:
        """Sorted set: every reservation of the model's offers -> expires_ms, for the sweep."""
        return f"{self.book_tag(model)}:reservations"

    def session_offers(self, model: str, session: str) -> str:
        """Set: refs a bidder session posted for the model (cancel on disconnect)."""
        return f"{self.book_tag(model)}:session:{session}"

    def book_changes(self, model: str) -> str:
        """Stream: every change to the model's book (replicas and the feed follow it)."""
        return f"{self.book_tag(model)}:changes"

    def book_version(self, model: str) -> str:
        """Counter: changes ever made to the model's book; each stream entry carries it as `n`."""
        return f"{self.book_tag(model)}:version"

    def book_seq(self, model: str) -> str:
        """Counter: time priority for new or re-priced offers of the model."""
        return f"{self.book_tag(model)}:seq"

    def health(self, model: str, ref: str) -> str:
        """Hash: failures in a row, cool-down end, observed TTFT and output speed."""
        return f"{self.book_tag(model)}:health:{ref}"

    # -- provider offer locations: slot {p:PROVIDER} -------------------------------------------
    def provider_offers(self, provider: str) -> str:
        """Hash: offer id -> model whose book holds (or last held) the provider's offer."""
        return f"{self.prefix}:{{p:{provider}}}:offers"

    # -- client keys: slots {k:KEY_ID} and {keys} ----------------------------------------------
    def account(self, key_id: str) -> str:
        """Hash: name, token hash, budget, period, spent, period start, revoked."""
        return f"{self.prefix}:{{k:{key_id}}}:account"

    def holds(self, key_id: str) -> str:
        """Sorted set: hold id -> expires_ms; the hold amounts are in `hold_amounts`."""
        return f"{self.prefix}:{{k:{key_id}}}:holds"

    def hold_amounts(self, key_id: str) -> str:
        """Hash: hold id -> nano-USD held."""
        return f"{self.prefix}:{{k:{key_id}}}:hold_amounts"

    def settled_holds(self, key_id: str) -> str:
        """Hash: hold id -> nano-USD charged, so a repeated settle is a no-op."""
        return f"{self.prefix}:{{k:{key_id}}}:settled"

    def rate(self, key_id: str, window: int) -> str:
        """Counter: requests in one rate-limit window."""
        return f"{self.prefix}:{{k:{key_id}}}:rate:{window}"

    def key_index(self) -> str:
        """Hash: token hash -> key id."""
        return f"{self.prefix}:{{keys}}:by_hash"

    def key_names(self) -> str:
        """Hash: key name -> key id."""
        return f"{self.prefix}:{{keys}}:by_name"

    # -- providers: slot {prov} -----------------------------------------------------------------
    def providers(self) -> str:
        """Hash: provider name -> registration JSON (api, base_url, api key, token hash)."""
        return f"{self.prefix}:{{prov}}:providers"

    def provider_tokens(self) -> str:
        """Hash: bidder-token hash -> provider name."""
        return f"{self.prefix}:{{prov}}:tokens"

    # -- ledger and feed --------------------------------------------------------------------------
    def ledger(self) -> str:
        """Stream: one entry per settlement."""
        return f"{self.prefix}:{{ledger}}:stream"

    def ledger_marks(self) -> str:
        """Hash: clearing id -> ledger entry id, so a settlement is written once."""
        return f"{self.prefix}:{{ledger}}:marks"

    def trades(self) -> str:
        """Stream: public trades (no client identity), for the feed."""
        return f"{self.prefix}:{{feed}}:trades"

    def trades_version(self) -> str:
        """Counter: trades ever published; each trade entry carries it as `n` (gaps = trimmed)."""
        return f"{self.prefix}:{{feed}}:trades_version"

    def clearing_record(self, clearing_id: str) -> str:
        """String: one clearing record as JSON, with a TTL."""
        return f"{self.prefix}:clearing:{clearing_id}"

    # -- pub/sub channels -------------------------------------------------------------------------
    def fills_channel(self, provider: str) -> str:
        """Channel: fill notices for a provider's live bidder sessions on any server process."""
        return f"{self.prefix}:fills:{provider}"

    def control_channel(self) -> str:
        """Channel: provider removed, key revoked: every process drops its caches and sessions."""
        return f"{self.prefix}:control"

    # -- added for accounts (holds remember their period; settle marks are pruned by age) --------
    def hold_periods(self, key_id: str) -> str:
        """Hash: hold id -> budget period id it was taken in (its charge counts there)."""
        return f"{self.prefix}:{{k:{key_id}}}:hold_periods"

    def settled_order(self, key_id: str) -> str:
        """Sorted set: hold id -> settled ms, so old `settled_holds` marks can be pruned."""
        return f"{self.prefix}:{{k:{key_id}}}:settled_order"

    # -- added for passive health (client side): what changed, so processes read only that ----
    def health_changes(self, model: str) -> str:
        """Sorted set: ref -> health change number of its latest change (processes poll it)."""
        return f"{self.book_tag(model)}:health_changes"

    def health_version(self, model: str) -> str:
        """Counter: health changes ever recorded for the model's offers."""
        return f"{self.book_tag(model)}:health_version"
