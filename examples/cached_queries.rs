//! A read-heavy workload on PostgreSQL, with and without the cache.
//!
//! ```sh
//! cargo run --release --example cached_queries -- --reads 100000 --json
//! ```
//!
//! Creates (once) `queue_demo_products` (100,000 rows) and `queue_demo_orders` (300,000 rows),
//! then reads product summaries (a join with an aggregate) for product ids drawn from a Zipf
//! distribution (s = 1.1: a few products are very popular, most are rarely seen):
//!
//! 1. uncached: every read queries PostgreSQL;
//! 2. cached, cold: the same number of reads through a cache that starts empty (warm-up);
//! 3. cached, steady state: the same number again, measured: this is the figure a running
//!    service sees.
//!
//! Prints the hit ratio, the database queries of each mode and read latencies p50/p99.
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1/test`), `REDIS_URL` (default: a
//! throwaway redis-server).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue::cache::Cache;
use queue::cache::CachePolicy;
use queue::cache::SqlParam;
use queue::testing::RedisServer;
use queue::Client;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

const PRODUCTS: i64 = 100_000;
const SQL: &str = "SELECT p.id, p.name, p.price_cents, count(o.id) AS orders, coalesce(sum(o.qty), 0)::BIGINT AS units \
     FROM queue_demo_products p LEFT JOIN queue_demo_orders o ON o.product_id = p.id \
     WHERE p.id = $1 GROUP BY p.id";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    id: i64,
    name: String,
    price_cents: i64,
    orders: i64,
    units: i64,
}

fn summary(row: &PgRow) -> Result<Summary, sqlx::Error> {
    Ok(Summary {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        orders: row.try_get("orders")?,
        units: row.try_get("units")?,
    })
}

async fn setup(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS queue_demo_products (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price_cents BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS queue_demo_orders (id BIGSERIAL PRIMARY KEY, product_id BIGINT NOT NULL, qty BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS queue_demo_orders_product ON queue_demo_orders (product_id)",
    )
    .execute(pool)
    .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_demo_products")
        .fetch_one(pool)
        .await?;
    if n != PRODUCTS {
        sqlx::query("TRUNCATE queue_demo_products, queue_demo_orders")
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO queue_demo_products SELECT g, 'product ' || g, (g * 37) % 10000 + 99 FROM generate_series(1, $1) g")
            .bind(PRODUCTS)
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO queue_demo_orders (product_id, qty) SELECT (g::BIGINT * 7919) % $1 + 1, g % 5 + 1 FROM generate_series(1, 300000) g")
            .bind(PRODUCTS)
            .execute(pool)
            .await?;
        sqlx::query("ANALYZE queue_demo_products")
            .execute(pool)
            .await?;
        sqlx::query("ANALYZE queue_demo_orders")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Zipf(s) over 1..=n by inversion of the cumulative distribution.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Zipf {
            cdf: cdf.into_iter().map(|c| c / total).collect(),
        }
    }
    fn sample(&self, u: f64) -> i64 {
        self.cdf.partition_point(|c| *c < u) as i64 + 1
    }
}

#[derive(Debug, Default, Serialize)]
struct Report {
    l1: bool,
    reads: u64,
    concurrency: usize,
    zipf_s: f64,
    hit_ratio: f64,
    hit_ratio_cold: f64,
    db_queries_cached: u64,
    db_queries_cold: u64,
    db_queries_uncached: u64,
    db_query_reduction: f64,
    p50_ms_cached: f64,
    p99_ms_cached: f64,
    p50_ms_uncached: f64,
    p99_ms_uncached: f64,
    p50_speedup: f64,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    let v = sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    (v * 1000.0).round() / 1000.0
}

/// Runs `reads` reads with `concurrency` tasks; returns sorted latencies (ms) and DB queries.
async fn run(
    reads: u64,
    concurrency: usize,
    zipf: Arc<Zipf>,
    pool: PgPool,
    cache: Option<Cache>,
    seed: u64,
) -> Result<(Vec<f64>, u64), Box<dyn std::error::Error>> {
    let queries = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (zipf, pool, cache, queries) =
            (zipf.clone(), pool.clone(), cache.clone(), queries.clone());
        let per = reads / concurrency as u64 + u64::from((t as u64) < reads % concurrency as u64);
        tasks.spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + t as u64);
            let policy = CachePolicy::query_results();
            let mut lat = Vec::with_capacity(per as usize);
            for _ in 0..per {
                let id = zipf.sample(rng.random::<f64>());
                let t0 = Instant::now();
                let rows = match &cache {
                    Some(c) => {
                        c.query_pg(
                            &policy,
                            "products",
                            &pool,
                            SQL,
                            &[SqlParam::Int(id)],
                            summary,
                        )
                        .await?
                    }
                    None => {
                        queries.fetch_add(1, Ordering::Relaxed);
                        let rows = sqlx::query(SQL).bind(id).fetch_all(&pool).await?;
                        rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?
                    }
                };
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                debug_assert_eq!(rows.first().map(|r| r.id), Some(id));
            }
            Ok::<_, sqlx::Error>(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let db = match &cache {
        Some(c) => c.stats().iter().map(|s| s.loads).sum(),
        None => queries.load(Ordering::Relaxed),
    };
    Ok((lat, db))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let json = args.iter().any(|a| a == "--json");
    // `--l1`: an in-process L1 in front of Redis (kept coherent by invalidation messages).
    let l1 = args.iter().any(|a| a == "--l1");
    let reads: u64 = arg("--reads")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(50_000);
    let concurrency: usize = arg("--concurrency")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(16);
    let db_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into());
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&db_url)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL at {db_url}: {e} (set DATABASE_URL)"))?;
    setup(&pool).await?;
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(u) => (None, u),
        Err(_) => {
            let s = RedisServer::start()?;
            let u = s.url().to_string();
            (Some(s), u)
        }
    };
    let mut config = queue::ClientConfig::new(url);
    // A namespace of its own: every run starts with an empty cache.
    config.namespace = format!("demo-{}", queue::JobId::generate().as_str().to_lowercase());
    let client = Client::connect_with(config).await?;
    let zipf = Arc::new(Zipf::new(PRODUCTS as usize, 1.1));

    let (uncached, db_uncached) =
        run(reads, concurrency, zipf.clone(), pool.clone(), None, 1).await?;
    let make = || async {
        if l1 {
            Cache::with_l1(client.clone(), 100_000, Duration::from_secs(60)).await
        } else {
            Ok(Cache::new(client.clone()))
        }
    };
    let cold_cache = make().await?;
    let (_, db_cold) = run(
        reads,
        concurrency,
        zipf.clone(),
        pool.clone(),
        Some(cold_cache.clone()),
        2,
    )
    .await?;
    // The steady state: the same cache, new traffic from the same distribution.
    let steady = make().await?;
    let (cached, db_steady) = run(
        reads,
        concurrency,
        zipf.clone(),
        pool.clone(),
        Some(steady.clone()),
        3,
    )
    .await?;
    let _ = cold_cache.flush_stats().await;
    let _ = steady.flush_stats().await;

    let r = Report {
        l1,
        reads,
        concurrency,
        zipf_s: 1.1,
        hit_ratio: 1.0 - db_steady as f64 / reads as f64,
        hit_ratio_cold: 1.0 - db_cold as f64 / reads as f64,
        db_queries_cached: db_steady,
        db_queries_cold: db_cold,
        db_queries_uncached: db_uncached,
        db_query_reduction: 1.0 - db_steady as f64 / db_uncached.max(1) as f64,
        p50_ms_cached: pct(&cached, 0.5),
        p99_ms_cached: pct(&cached, 0.99),
        p50_ms_uncached: pct(&uncached, 0.5),
        p99_ms_uncached: pct(&uncached, 0.99),
        p50_speedup: pct(&uncached, 0.5) / pct(&cached, 0.5).max(0.001),
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} reads of product summaries, Zipf(1.1) over {PRODUCTS} products, {concurrency} readers, cache {}",
            r.reads,
            if l1 { "L1 + Redis" } else { "Redis" }
        );
        println!(
            "  uncached:           {} db queries, p50 {:.3} ms, p99 {:.3} ms",
            r.db_queries_uncached, r.p50_ms_uncached, r.p99_ms_uncached
        );
        println!(
            "  cached, cold start: {} db queries, hit ratio {:.1}%",
            r.db_queries_cold,
            r.hit_ratio_cold * 100.0
        );
        println!(
            "  cached, steady:     {} db queries, hit ratio {:.1}%, p50 {:.3} ms, p99 {:.3} ms",
            r.db_queries_cached,
            r.hit_ratio * 100.0,
            r.p50_ms_cached,
            r.p99_ms_cached
        );
        println!(
            "  database queries -{:.1}%, p50 {:.1}x faster",
            r.db_query_reduction * 100.0,
            r.p50_speedup
        );
    }
    Ok(())
}
