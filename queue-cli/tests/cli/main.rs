//! The `queue` binary end to end against real redis-server processes: one test binary (one
//! link step) for the operator commands and `queue bench`.

mod bench;
mod cluster;
mod dash;
mod input_errors;
mod ops;
mod sentinel;

use queue::testing::{RedisServer, RedisServerOptions};

/// The ACL run (`QUEUE_TEST_ACL=1`, as for the workspace's integration suite): every server
/// has a password on its `default` user, and the commands and clients under test connect as a
/// user with the union of the documented producer, worker and operator rules of namespace
/// `queue` (`queue::acl`), so a command those rules do not allow fails the test that needs it.
fn acl_mode() -> bool {
    std::env::var("QUEUE_TEST_ACL").is_ok_and(|v| v == "1")
}

const ADMIN_PASSWORD: &str = "queue-test-admin";
const SUITE_USER: (&str, &str) = ("suite", "queue-test-suite");

/// A test's server: [`Server::url`] is what the code under test connects with, and
/// [`Server::admin_url`] the test's own seeding and inspection.
#[derive(Debug)]
pub struct Server {
    inner: RedisServer,
    url: String,
}

impl Server {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn admin_url(&self) -> String {
        self.inner.admin_url()
    }

    /// The server's address without credentials.
    pub fn inner_url(&self) -> &str {
        self.inner.url()
    }
}

impl std::ops::Deref for Server {
    type Target = RedisServer;
    fn deref(&self) -> &RedisServer {
        &self.inner
    }
}

pub fn server() -> Server {
    server_with(RedisServerOptions::default())
}

pub fn server_with(mut opts: RedisServerOptions) -> Server {
    if acl_mode() {
        let (name, password) = SUITE_USER;
        opts.password = Some(ADMIN_PASSWORD.into());
        let rules = queue::acl::union_rules("queue").expect("rules");
        opts = opts.user(name, password, &rules);
    }
    let inner = RedisServer::start_with(opts).expect("redis-server");
    let url = if acl_mode() {
        let (name, password) = SUITE_USER;
        let url = queue::testing::with_credentials(inner.url(), name, password);
        // The ACL run is what it says: a `@dangerous` command is refused.
        let mut con = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("the suite user connects");
        let err = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query::<redis::Value>(&mut con)
            .expect_err("CONFIG refused");
        assert_eq!(err.code(), Some("NOPERM"), "{err}");
        url
    } else {
        inner.url().to_string()
    };
    Server { inner, url }
}
