//! Cached PostgreSQL queries against the machine's real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1/test`; `.ci/run` makes sure one is running).

use crate::common;

use common::Env;
use queue::cache::Cache;
use queue::cache::CachePolicy;
use queue::cache::SqlParam;
use sqlx::postgres::PgRow;
use sqlx::Row;

async fn pool() -> sqlx::PgPool {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into());
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must be running for this test (DATABASE_URL={url}): {e}")
        })
}

fn name(row: &PgRow) -> Result<(i64, String), sqlx::Error> {
    Ok((row.try_get("id")?, row.try_get("name")?))
}

#[tokio::test]
async fn query_results_are_cached_by_sql_and_parameters() {
    let env = Env::start().await;
    let pool = pool().await;
    // A table of its own, so parallel runs never meet.
    let table = format!(
        "queue_test_{}",
        queue::JobId::generate().as_str().to_lowercase()
    );
    sqlx::query(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"
    ))
    .execute(&pool)
    .await
    .expect("create");
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT g, 'item ' || g FROM generate_series(1, 100) g"
    ))
    .execute(&pool)
    .await
    .expect("insert");
    let sql = format!("SELECT id, name FROM {table} WHERE id = $1");
    let cache = Cache::new(env.client.clone());
    let policy = CachePolicy::query_results();
    let loads = |c: &Cache| c.stats().iter().map(|s| s.loads).sum::<u64>();

    for _ in 0..5 {
        let rows = cache
            .query_pg(&policy, "items", &pool, &sql, &[SqlParam::Int(7)], name)
            .await
            .expect("query");
        assert_eq!(rows, vec![(7, "item 7".to_string())]);
    }
    assert_eq!(loads(&cache), 1, "one database query for five reads");
    let other = cache
        .query_pg(&policy, "items", &pool, &sql, &[SqlParam::Int(8)], name)
        .await
        .expect("query");
    assert_eq!(other, vec![(8, "item 8".to_string())]);
    assert_eq!(loads(&cache), 2, "other parameters are another query");
    // "Not found" (no rows) is cached too.
    for _ in 0..3 {
        assert!(cache
            .query_pg(&policy, "items", &pool, &sql, &[SqlParam::Int(999)], name)
            .await
            .expect("query")
            .is_empty());
    }
    assert_eq!(loads(&cache), 3);

    // A write to the table, then a namespace bump: the next read sees the new row.
    sqlx::query(&format!("UPDATE {table} SET name = 'renamed' WHERE id = 7"))
        .execute(&pool)
        .await
        .expect("update");
    assert_eq!(
        cache
            .query_pg(&policy, "items", &pool, &sql, &[SqlParam::Int(7)], name)
            .await
            .expect("query")[0]
            .1,
        "item 7",
        "still cached"
    );
    cache.bump_namespace("items").await.expect("bump");
    assert_eq!(
        cache
            .query_pg(&policy, "items", &pool, &sql, &[SqlParam::Int(7)], name)
            .await
            .expect("query")[0]
            .1,
        "renamed"
    );

    // Database errors reach the caller; nothing is cached for them.
    let bad = cache
        .query_pg(
            &policy,
            "items",
            &pool,
            "SELECT nope FROM nowhere",
            &[],
            name,
        )
        .await;
    assert!(bad.is_err());
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .expect("drop");
}
