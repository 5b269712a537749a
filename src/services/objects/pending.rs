//! The gets and waits each client has in progress on this shard, and the clients gone
//! lately: when a client goes (`ClientGone`), its operations end at once, without pinning
//! anything for it, and their pulls are cancelled, instead of when their timeouts (possibly
//! infinite) run out.

use crate::logic::objects::ClientId;
use crate::logic::transfer::pull::BundleId;
use crate::logic::waits::RequestId;
use std::collections::{HashMap, HashSet, VecDeque};

/// How many gone clients are remembered: enough for the operations still in flight from
/// them (client ids are never reused).
const GONE_REMEMBERED: usize = 4096;

/// Operations in progress by client, and the clients gone lately.
#[derive(Debug, Default)]
pub struct Pending {
    by_client: HashMap<ClientId, Vec<(RequestId, Option<BundleId>)>>,
    gone: HashSet<ClientId>,
    gone_order: VecDeque<ClientId>,
}

impl Pending {
    /// `client` waits on `req` (with the pull `bundle`, if any).
    pub fn track(&mut self, client: ClientId, req: RequestId, bundle: Option<BundleId>) {
        self.by_client.entry(client).or_default().push((req, bundle));
    }

    /// `req` of `client` ended; its pull to cancel, unless the client's end took it
    /// already (`None` then).
    pub fn untrack(&mut self, client: ClientId, req: RequestId) -> Option<Option<BundleId>> {
        let reqs = self.by_client.get_mut(&client)?;
        let i = reqs.iter().position(|(r, _)| *r == req)?;
        let (_, bundle) = reqs.swap_remove(i);
        if reqs.is_empty() {
            self.by_client.remove(&client);
        }
        Some(bundle)
    }

    /// Whether `client` is gone.
    pub fn is_gone(&self, client: ClientId) -> bool {
        self.gone.contains(&client)
    }

    /// `client` is gone: returns its operations in progress, to end.
    pub fn client_gone(&mut self, client: ClientId) -> Vec<(RequestId, Option<BundleId>)> {
        if self.gone.insert(client) {
            self.gone_order.push_back(client);
            if self.gone_order.len() > GONE_REMEMBERED {
                if let Some(old) = self.gone_order.pop_front() {
                    self.gone.remove(&old);
                }
            }
        }
        self.by_client.remove(&client).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_client_hands_over_its_operations_once_and_is_remembered_boundedly() {
        let mut p = Pending::default();
        let (a, b) = (ClientId(1), ClientId(2));
        p.track(a, RequestId(1), Some(BundleId(7)));
        p.track(a, RequestId(2), None);
        p.track(b, RequestId(3), None);
        assert_eq!(p.untrack(a, RequestId(2)), Some(None));
        assert_eq!(p.client_gone(a), vec![(RequestId(1), Some(BundleId(7)))]);
        assert!(p.is_gone(a) && !p.is_gone(b));
        assert_eq!(p.untrack(a, RequestId(1)), None, "the client's end took it");
        assert!(p.client_gone(a).is_empty());
        for i in 0..GONE_REMEMBERED as u64 {
            p.client_gone(ClientId(100 + i));
        }
        assert!(!p.is_gone(a), "forgotten after {GONE_REMEMBERED} later ends");
        assert_eq!(p.untrack(b, RequestId(3)), Some(None));
    }
}
