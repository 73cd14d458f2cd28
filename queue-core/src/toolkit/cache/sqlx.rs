//! Cached PostgreSQL queries (feature `sqlx`): the key is the SQL text and the bound parameters,
//! so two calls share a value only when they are the same query.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgRow};

use crate::toolkit::cache::{Cache, CacheKey, CachePolicy};

/// A bound parameter (what the key is made of, and what is sent to PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SqlParam {
    /// `BIGINT` (and smaller integers).
    Int(i64),
    /// `TEXT`.
    Text(String),
    /// `DOUBLE PRECISION`.
    Float(f64),
    /// `BOOLEAN`.
    Bool(bool),
}

impl From<i64> for SqlParam {
    fn from(v: i64) -> SqlParam {
        SqlParam::Int(v)
    }
}
impl From<&str> for SqlParam {
    fn from(v: &str) -> SqlParam {
        SqlParam::Text(v.to_string())
    }
}
impl From<String> for SqlParam {
    fn from(v: String) -> SqlParam {
        SqlParam::Text(v)
    }
}
impl From<f64> for SqlParam {
    fn from(v: f64) -> SqlParam {
        SqlParam::Float(v)
    }
}
impl From<bool> for SqlParam {
    fn from(v: bool) -> SqlParam {
        SqlParam::Bool(v)
    }
}

impl Cache {
    /// Runs `sql` with `params` on `pool` unless its rows are cached under `policy`; rows are
    /// mapped with `map` and cached as a list (an empty result is cached as one). The cache
    /// key lives in `namespace` (bump it to invalidate every query of a table at once).
    ///
    /// # Errors
    ///
    /// Only database errors; cache failures fall back to the database.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn query_pg<T>(
        &self,
        policy: &CachePolicy,
        namespace: &str,
        pool: &PgPool,
        sql: &str,
        params: &[SqlParam],
        map: fn(&PgRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let key = match CacheKey::for_query(namespace, sql, &params) {
            Ok(k) => k,
            Err(_) => return run(pool, sql, params, map).await,
        };
        let rows = self
            .get_or_load(&key, policy, || async {
                run(pool, sql, params, map).await.map(Some)
            })
            .await?;
        Ok(rows.unwrap_or_default())
    }
}

async fn run<T>(
    pool: &PgPool,
    sql: &str,
    params: &[SqlParam],
    map: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, sqlx::Error> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            SqlParam::Int(v) => q.bind(*v),
            SqlParam::Text(v) => q.bind(v.clone()),
            SqlParam::Float(v) => q.bind(*v),
            SqlParam::Bool(v) => q.bind(*v),
        };
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter().map(map).collect()
}
