//! Id allocation in blocks, so several runtimes on one database never hand out the same
//! pid, capability id or event id (the `meta` table holds each sequence's high-water mark;
//! a runtime takes a block of ids at a time with one `UPDATE … RETURNING`).

use parking_lot::Mutex;
use sqlx::SqlitePool;

/// Ids taken from the database per round trip. Each spawn takes a pid and a capability id
/// per grant (at least three), so a small block makes concurrent spawns queue for the
/// database's write lock behind the writer's group commits.
const BLOCK: i64 = 4096;

/// One named sequence.
pub struct IdBlock {
    key: &'static str,
    range: Mutex<(i64, i64)>,
    /// Held while a block is taken: callers that find the block used up wait for one
    /// refill instead of each taking a block.
    refill: tokio::sync::Mutex<()>,
}

impl IdBlock {
    /// Prepares sequence `key`, starting after the largest id already in `table`.`column`.
    pub async fn open(
        pool: &SqlitePool,
        key: &'static str,
        max_sql: &'static str,
    ) -> Result<IdBlock, sqlx::Error> {
        let max: Option<i64> = sqlx::query_scalar(max_sql).fetch_one(pool).await?;
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(max.unwrap_or(0).to_string())
            .execute(pool)
            .await?;
        Ok(IdBlock {
            key,
            range: Mutex::new((0, 0)),
            refill: tokio::sync::Mutex::new(()),
        })
    }

    /// The next id, taking a new block from the database when this one is used up.
    pub async fn next(&self, pool: &SqlitePool) -> Result<i64, sqlx::Error> {
        loop {
            {
                let mut range = self.range.lock();
                if range.0 < range.1 {
                    range.0 += 1;
                    return Ok(range.0);
                }
            }
            let _one_refill = self.refill.lock().await;
            {
                let range = self.range.lock();
                if range.0 < range.1 {
                    // Another caller refilled it while this one waited.
                    continue;
                }
            }
            let end: String = sqlx::query_scalar(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = ? RETURNING value",
            )
            .bind(BLOCK)
            .bind(self.key)
            .fetch_one(pool)
            .await?;
            let end: i64 = end
                .parse()
                .map_err(|e: std::num::ParseIntError| sqlx::Error::Decode(e.into()))?;
            let mut range = self.range.lock();
            if range.0 >= range.1 {
                *range = (end - BLOCK, end);
            }
        }
    }
}
