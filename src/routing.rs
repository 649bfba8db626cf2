//! Which deployment serves a request, among a model's deployments.
//!
//! For now deployments are taken in turn; the strategies named in
//! `router_settings.routing_strategy` come with the routing issue.

use crate::config::Model;

/// Picks a deployment index for the `n`-th request this worker routes.
pub fn pick(model: &Model, n: u64) -> Option<usize> {
    let len = model.deployments.len() as u64;
    if len == 0 {
        return None;
    }
    let i = usize::try_from(n % len).ok()?;
    model.deployments.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin() {
        let m = Model { name: "m".into(), deployments: vec![4, 7] };
        let picks: Vec<_> = (0..4).map(|n| pick(&m, n).unwrap()).collect();
        assert_eq!(picks, vec![4, 7, 4, 7]);
        assert_eq!(pick(&Model { name: "x".into(), deployments: vec![] }, 0), None);
    }
}
