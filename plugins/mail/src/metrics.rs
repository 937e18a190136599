//! The mail plugin's series for `--metrics`: messages accepted, rejected and failed, the time
//! from the end of DATA to every copy durable, recipients refused, and POP3 logins.

use twistrs_core::metrics::{self, Counter, Histogram, LATENCY_BUCKETS};

pub struct MailMetrics {
    pub accepted: Counter,
    /// Refused at the end of DATA: too big, or a line over 1,000 octets.
    pub rejected_too_big: Counter,
    pub rejected_long_line: Counter,
    /// Refused with 452 at the end of DATA: `--max-data-memory` was in use.
    pub rejected_no_storage: Counter,
    /// Taken in but not made durable (the client got 451).
    pub failed: Counter,
    pub durable: Histogram,
    pub recipients_refused: Counter,
    pub pop3_ok: Counter,
    pub pop3_failed: Counter,
}

impl MailMetrics {
    fn new() -> Self {
        let msg = |result: &str, reason: &str| {
            metrics::counter(
                "twistrs_mail_messages_total",
                "SMTP messages by outcome: accepted (durable), rejected, failed.",
                &[("result", result), ("reason", reason)],
            )
        };
        let login = |result: &str| {
            metrics::counter(
                "twistrs_mail_pop3_logins_total",
                "POP3 logins, by outcome.",
                &[("result", result)],
            )
        };
        MailMetrics {
            accepted: msg("accepted", ""),
            rejected_too_big: msg("rejected", "too_big"),
            rejected_long_line: msg("rejected", "long_line"),
            rejected_no_storage: msg("rejected", "no_storage"),
            failed: msg("failed", "local_error"),
            durable: metrics::histogram(
                "twistrs_mail_delivery_seconds",
                "From the end of DATA until every copy was fsynced.",
                &[],
                LATENCY_BUCKETS,
            ),
            recipients_refused: metrics::counter(
                "twistrs_mail_recipients_refused_total",
                "RCPT TO refused (550: foreign domain, no such user, bad syntax).",
                &[],
            ),
            pop3_ok: login("ok"),
            pop3_failed: login("failed"),
        }
    }
}

thread_local! {
    static METRICS: MailMetrics = MailMetrics::new();
}

/// Runs `f` with the mail series (registered on first use: `register` does it at start-up so
/// a scrape shows them at zero).
pub fn with(f: impl FnOnce(&MailMetrics)) {
    METRICS.with(f);
}

/// Registers the series now.
pub fn register() {
    with(|_| {});
}
