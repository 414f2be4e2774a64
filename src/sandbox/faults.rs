//! Fault injection: what can go wrong with a marketplace call ([`Fault`]) and how often it goes wrong for
//! one API ([`FaultPlan`]). The per-API middleware in `mod.rs` asks the plan for the next request's fault
//! and turns it into a response; scripted faults come first, in order, then the seeded rates apply.

use std::collections::VecDeque;
use std::time::Duration;

use super::generator::Generator;

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 or 503 with a plain-text body; the handler does not run.
    ServerError,
    /// HTTP 429 with a `Retry-After` header of this many seconds; the handler does not run.
    RateLimited { retry_after_secs: u64 },
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// HTTP 200 with a body that is not valid for the API; the handler does not run.
    Malformed,
    /// The handler runs (its effects happen) but only the first half of its body is sent.
    Truncated,
    /// HTTP 200 with a `text/html` error page, as a misbehaving proxy sends; the handler does not run.
    WrongContentType,
}

/// How one API misbehaves. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub server_error_rate: f64,
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    pub slow_rate: f64,
    pub slow_delay: Duration,
    pub malformed_rate: f64,
    pub truncated_rate: f64,
    pub wrong_content_type_rate: f64,
    /// Faults for the next requests, applied first and in order (for deterministic tests).
    pub script: VecDeque<Fault>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            server_error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            slow_rate: 0.0,
            slow_delay: Duration::from_millis(200),
            malformed_rate: 0.0,
            truncated_rate: 0.0,
            wrong_content_type_rate: 0.0,
            script: VecDeque::new(),
        }
    }
}

impl FaultPlan {
    /// A plan that injects exactly these faults into the next requests, then nothing.
    pub fn scripted(faults: impl IntoIterator<Item = Fault>) -> FaultPlan {
        FaultPlan {
            script: faults.into_iter().collect(),
            ..FaultPlan::default()
        }
    }

    /// The fault for the next request: the next scripted one, else one drawn from the rates. A rate of zero
    /// draws nothing from the generator, so a fault-free plan leaves the seeded data sequence untouched.
    pub fn next_fault(&mut self, generator: &mut Generator) -> Option<Fault> {
        if let Some(fault) = self.script.pop_front() {
            return Some(fault);
        }
        let candidates = [
            (self.server_error_rate, Fault::ServerError),
            (
                self.rate_limit_rate,
                Fault::RateLimited {
                    retry_after_secs: self.retry_after_secs,
                },
            ),
            (self.slow_rate, Fault::Slow(self.slow_delay)),
            (self.malformed_rate, Fault::Malformed),
            (self.truncated_rate, Fault::Truncated),
            (self.wrong_content_type_rate, Fault::WrongContentType),
        ];
        candidates
            .into_iter()
            .find(|(rate, _)| *rate > 0.0 && generator.chance(*rate))
            .map(|(_, fault)| fault)
    }
}
