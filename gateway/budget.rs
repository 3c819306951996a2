//! The memory budget of held bodies (`[gateway] max_buffered`): every byte the gateway holds
//! of a body it reads whole — a request body before it goes upstream, a response body being
//! validated, audited or stored in the cache — counts against one total for all exchanges.
//! Without it, 500 concurrent large answers would need 32 GiB.
//!
//! Each exchange holds one [`Held`]: how much of the request and of the response it keeps.
//! Reading the same response twice (validation, then the audit digest) asks for the same size
//! again and costs nothing more. An exchange that cannot have what it needs is refused with 503
//! `overloaded`: before reading a byte when the size is declared, else as soon as it crosses
//! the budget. What an exchange holds is given back when its response body has been sent (or
//! dropped): the held body travels with the response ([`crate::body::holding`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The budget shared by every exchange.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    max: AtomicU64,
}

/// What one exchange holds of the budget: its request body and its response body, at most
/// one of each at a time.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    request: u64,
    response: u64,
}

/// Which of an exchange's bodies is being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Request,
    Response,
}

/// The budget cannot hold what an exchange asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("holding {wanted} more bytes would pass the {max}-byte budget ({used} held)")]
pub struct OverBudget {
    pub wanted: u64,
    pub used: u64,
    pub max: u64,
}

// === impl Budget ===

impl Budget {
    pub fn new(max: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            max: AtomicU64::new(max),
        })
    }

    /// A new limit (a reload); what is held stays held.
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Bytes held now, by all exchanges.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An exchange's account, holding nothing yet.
    pub fn account(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            request: 0,
            response: 0,
        }
    }

    fn take(&self, wanted: u64) -> Result<(), OverBudget> {
        let max = self.max();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(wanted) > max {
                return Err(OverBudget { wanted, used, max });
            }
            match self.used.compare_exchange_weak(
                used,
                used + wanted,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

// === impl Held ===

impl Held {
    /// Holds at least `bytes` for `part`: asks the budget for the difference, if any.
    pub fn want(&mut self, part: Part, bytes: u64) -> Result<(), OverBudget> {
        let held = match part {
            Part::Request => &mut self.request,
            Part::Response => &mut self.response,
        };
        if bytes > *held {
            self.budget.take(bytes - *held)?;
            *held = bytes;
        }
        Ok(())
    }

    /// Bytes this exchange holds.
    pub fn bytes(&self) -> u64 {
        self.request + self.response
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let bytes = self.bytes();
        if bytes > 0 {
            self.budget.give_back(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_share_the_budget_and_give_back_what_they_held() {
        let budget = Budget::new(100);
        let mut a = budget.account();
        let mut b = budget.account();
        a.want(Part::Request, 40).unwrap();
        a.want(Part::Response, 30).unwrap();
        // The same response read again costs nothing more.
        a.want(Part::Response, 30).unwrap();
        assert_eq!(budget.used(), 70);
        assert_eq!(
            b.want(Part::Response, 31),
            Err(OverBudget {
                wanted: 31,
                used: 70,
                max: 100
            })
        );
        b.want(Part::Response, 30).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 30);
        let body = crate::body::holding(crate::body::full("x"), b);
        assert_eq!(budget.used(), 30);
        drop(body);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_lower_limit_refuses_new_holdings_and_keeps_old_ones() {
        let budget = Budget::new(100);
        let mut a = budget.account();
        a.want(Part::Request, 80).unwrap();
        budget.set_max(50);
        assert!(budget.account().want(Part::Request, 1).is_err());
        drop(a);
        assert!(budget.account().want(Part::Request, 50).is_ok());
    }
}
