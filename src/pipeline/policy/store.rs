//! The shared store of `scope = "global"` rate limits: Redis (or a compatible server)
//! through the `redis` crate's connection manager, which reconnects by itself. Each
//! request is one script call that reads, decides and writes its bucket atomically (the
//! same GCRA as the local buckets, on the store's own clock, so every gateway process
//! shares one time line). A call gets the store's `timeout` (50 ms unless set); past it, or with the store down, the
//! request follows `on_error` and never waits longer.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::model::RateLimitStore;

use super::bucket::Verdict;

/// KEYS[1]: the bucket; ARGV[1]: the interval in microseconds; ARGV[2]: the burst.
/// Returns admitted (0/1), remaining, retry-after and reset (microseconds).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
";

pub struct Store {
    pub settings: RateLimitStore,
    client: redis::Client,
    /// Made on first use, inside the runtime of the request that needs it.
    manager: OnceLock<Result<ConnectionManager, String>>,
    script: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.write_str("Store")
    }
}

/// Why the store gave no verdict.
#[derive(Debug)]
pub struct StoreError(pub String);

impl Store {
    pub fn new(settings: RateLimitStore) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
        Ok(Self {
            settings,
            client,
            manager: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
        })
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let made = self.manager.get_or_init(|| {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.timeout))
                .set_response_timeout(Some(self.settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.to_string())
        });
        made.clone().map_err(StoreError)
    }

    /// One request against the bucket `key`, within the store's `timeout`.
    pub async fn check(&self, key: &str, interval: u64, burst: u64) -> Result<Verdict, StoreError> {
        let mut manager = self.manager()?;
        let mut call = self.script.key(key);
        call.arg(interval).arg(burst);
        let budget = self.settings.timeout;
        let answer = tokio::time::timeout(budget, call.invoke_async::<Vec<i64>>(&mut manager))
            .await
            .map_err(|_| StoreError(format!("no answer within {budget:?}")))?
            .map_err(|e| StoreError(e.to_string()))?;
        let [admitted, remaining, retry_after, reset] = answer[..] else {
            return Err(StoreError(format!("unexpected answer {answer:?}")));
        };
        let micros = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Verdict {
            admitted: admitted == 1,
            remaining: micros(remaining),
            retry_after: micros(retry_after),
            reset: micros(reset),
        })
    }
}
