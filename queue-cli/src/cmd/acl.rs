//! `queue acl`: the least-privilege Redis users of the namespace, as `ACL SETUSER` commands.

use std::process::ExitCode;

use serde::Serialize;

use crate::output::Out;
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this role: producer, worker or operator
    #[arg(long, value_parser = parse_role)]
    role: Option<queue::acl::Role>,
    /// Add what fsync durability needs (WAITAOF: Redis 7.2 or later, which older servers
    /// refuse in a rule)
    #[arg(long)]
    fsync: bool,
    /// Add what a Redis Cluster needs (the slot map, the masters, ASKING)
    #[arg(long)]
    cluster: bool,
}

fn parse_role(s: &str) -> Result<queue::acl::Role, String> {
    queue::acl::Role::parse(s)
        .ok_or_else(|| format!("{s:?} is no role: producer, worker or operator"))
}

#[derive(Debug, Serialize)]
struct User {
    role: &'static str,
    rules: String,
    command: String,
}

/// Prints the users; needs no Redis (paste the output into `redis-cli`, a password for each).
pub fn run(g: &Global, out: Out, args: Args) -> anyhow::Result<ExitCode> {
    let roles: Vec<queue::acl::Role> = match args.role {
        Some(r) => vec![r],
        None => queue::acl::Role::ALL.to_vec(),
    };
    let mut users = Vec::new();
    for role in roles {
        let mut rules = queue::acl::rules(role, &g.namespace)?;
        let mut command = queue::acl::setuser(role, role.name(), &g.namespace)?;
        let extra = [
            (args.fsync, role.fsync_commands()),
            (args.cluster, queue::acl::CLUSTER),
        ];
        for (wanted, extra) in extra {
            if wanted && !extra.is_empty() {
                for s in [&mut rules, &mut command] {
                    s.push(' ');
                    s.push_str(extra);
                }
            }
        }
        users.push(User {
            role: role.name(),
            rules,
            command,
        });
    }
    if out.json {
        out.json(&users)?;
    } else {
        for u in &users {
            out.line(&u.command)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
