//! Redis Cluster (issue 13, point 2): what holds already. The client does not speak the
//! cluster protocol yet; these tests pin down what it will rely on.

use queue::testing::{ClusterOptions, RedisCluster};
use queue::wire::{hash_slot, session_tag, CacheKeys, NamespaceKeys, QueueKeys, RateLimitKeys};

/// Names chosen to break a slot computation: braces in every position, empty tags, bytes a
/// key escape must handle.
const TRICKY: [&str; 10] = [
    "emails",
    "{",
    "}",
    "{}",
    "a{b}c",
    "}{",
    "{{x}}",
    "x:y",
    "ünïcode",
    "a b",
];

/// `keys::hash_slot` agrees with a real cluster's `CLUSTER KEYSLOT` for every key builder fed
/// hostile names, and every key a script takes together is in one slot there too.
#[test]
fn our_slots_are_the_clusters_for_every_key_builder() {
    let cluster = RedisCluster::start(ClusterOptions {
        replicas: 0,
        ..ClusterOptions::default()
    })
    .expect("a 3-master cluster (redis-server and redis-cli must be installed)");
    let mut con = redis::Client::open(cluster.nodes()[0].admin_url())
        .and_then(|c| c.get_connection())
        .expect("a node");
    let n = NamespaceKeys::new("ns").expect("ns");
    let c = CacheKeys::new("ns").expect("ns");
    let r = RateLimitKeys::new("ns").expect("ns");
    let mut groups: Vec<Vec<String>> = Vec::new();
    for t in TRICKY {
        if let Ok(q) = QueueKeys::new("ns", t) {
            let mut keys = q.all_fixed();
            keys.extend([q.metrics(1), q.metrics_hour(1), q.unique(t)]);
            groups.push(keys);
        }
        groups.push(vec![c.entry(t, t), c.lock(t, "k"), c.version(t)]);
        groups.push(vec![r.block(t), r.limit(t, t)]);
        let tag = session_tag(t);
        groups.push(vec![n.user_sessions(t), n.session(&tag, &"f".repeat(64))]);
    }
    for keys in &groups {
        let slots: Vec<u16> = keys
            .iter()
            .map(|k| {
                let server: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(k)
                    .query(&mut con)
                    .expect("CLUSTER KEYSLOT");
                assert_eq!(hash_slot(k.as_bytes()), server, "{k:?}");
                server
            })
            .collect();
        assert!(
            slots.windows(2).all(|w| w[0] == w[1]),
            "{keys:?}: {slots:?}"
        );
    }
}
