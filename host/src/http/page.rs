//! One rendered `/metrics` page per interval, shared by every scraper: rendering walks every
//! series, so N scrapers at once must not cost N renders and N copies of the page (200
//! concurrent scrapes of a 12.8 MB page took the daemon past 2.4 GB). The page is a
//! reference-counted buffer each response shares; its gzip form is made once, on demand.
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

/// Rendered pages, one per format (Prometheus text, OpenMetrics).
pub(super) struct PageCache {
    ttl: Duration,
    pages: Mutex<[Option<Page>; 2]>,
}

struct Page {
    at: Instant,
    plain: Bytes,
    gzip: Option<Bytes>,
}

impl PageCache {
    pub fn new(ttl: Duration) -> PageCache {
        PageCache {
            ttl,
            pages: Mutex::new([None, None]),
        }
    }

    /// The page of this format, rendered by `render` unless one younger than the interval
    /// exists; gzipped if asked. Holding the lock while rendering is the point: concurrent
    /// scrapers wait for the one render instead of starting their own. `renders` counts the
    /// renders.
    pub fn get(
        &self,
        openmetrics: bool,
        gzip: bool,
        renders: &AtomicU64,
        render: impl FnOnce() -> String,
    ) -> Bytes {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut pages[usize::from(openmetrics)];
        let fresh = slot
            .as_ref()
            .is_some_and(|p| !self.ttl.is_zero() && p.at.elapsed() < self.ttl);
        if !fresh {
            renders.fetch_add(1, Ordering::Relaxed);
            *slot = Some(Page {
                at: Instant::now(),
                plain: Bytes::from(render()),
                gzip: None,
            });
        }
        let page = slot.as_mut().expect("filled above");
        if !gzip {
            return page.plain.clone();
        }
        page.gzip
            .get_or_insert_with(|| Bytes::from(compress(&page.plain)))
            .clone()
    }
}

fn compress(data: &[u8]) -> Vec<u8> {
    // Level 1: a metrics page is repetitive text; faster levels already shrink it ~10×.
    let mut gz = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::fast());
    gz.write_all(data).expect("writing to a Vec");
    gz.finish().expect("writing to a Vec")
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::PageCache;

    #[test]
    fn scrapers_within_the_interval_share_one_render() {
        let cache = PageCache::new(Duration::from_secs(60));
        let n = AtomicU64::new(0);
        let a = cache.get(false, false, &n, || "page one\n".into());
        let b = cache.get(false, false, &n, || unreachable!("served from the cache"));
        assert_eq!(a, b);
        // The same buffer, not a copy.
        assert_eq!(a.as_ptr(), b.as_ptr());
        // The other format is its own page.
        let om = cache.get(true, false, &n, || "om page\n# EOF\n".into());
        assert_eq!(&om[..], b"om page\n# EOF\n");
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_old_page_is_rendered_again_and_zero_disables_the_cache() {
        let cache = PageCache::new(Duration::from_millis(20));
        let n = AtomicU64::new(0);
        cache.get(false, false, &n, || "old\n".into());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            &cache.get(false, false, &n, || "new\n".into())[..],
            b"new\n"
        );
        let uncached = PageCache::new(Duration::ZERO);
        uncached.get(false, false, &n, || "1\n".into());
        assert_eq!(&uncached.get(false, false, &n, || "2\n".into())[..], b"2\n");
    }

    #[test]
    fn gzip_is_the_same_page_compressed() {
        let cache = PageCache::new(Duration::from_secs(60));
        let n = AtomicU64::new(0);
        let text = "sonde_x_total{a=\"b\"} 1\n".repeat(1000);
        let gz = cache.get(false, true, &n, || text.clone());
        assert!(gz.len() < text.len() / 10, "{} of {}", gz.len(), text.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}
