//! Counting held requests, per identity and in all, so that the agent cannot fill the
//! operator's memory or approval list with requests that wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::layer::HoldLimits;

#[derive(Debug, Default, Clone)]
pub(crate) struct Holds {
    inner: Arc<Mutex<Count>>,
}

#[derive(Debug, Default)]
struct Count {
    total: usize,
    per: HashMap<String, usize>,
}

/// Why a request could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Identity(usize),
    Total(usize),
}

/// One held request; counted until dropped (answered, timed out, or the caller went away).
#[derive(Debug)]
pub(crate) struct Hold {
    holds: Holds,
    who: String,
}

impl Holds {
    pub(crate) fn try_hold(&self, who: &str, limits: HoldLimits) -> Result<Hold, Full> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per.get(who).copied().unwrap_or(0);
        if mine >= limits.per_identity {
            return Err(Full::Identity(limits.per_identity));
        }
        if c.total >= limits.total {
            return Err(Full::Total(limits.total));
        }
        c.total += 1;
        *c.per.entry(who.to_string()).or_default() += 1;
        Ok(Hold {
            holds: self.clone(),
            who: who.to_string(),
        })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut c = self.holds.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per.remove(&self.who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn limits_per_identity_and_in_all() {
        let h = Holds::default();
        let l = HoldLimits {
            per_identity: 2,
            total: 3,
        };
        let a1 = h.try_hold("a", l).unwrap();
        let _a2 = h.try_hold("a", l).unwrap();
        assert_eq!(h.try_hold("a", l).unwrap_err(), Full::Identity(2));
        let _b1 = h.try_hold("b", l).unwrap();
        assert_eq!(h.try_hold("c", l).unwrap_err(), Full::Total(3));
        drop(a1);
        let _c1 = h.try_hold("c", l).unwrap();
        assert_eq!(h.try_hold("a", l).unwrap_err(), Full::Total(3));
    }
}
