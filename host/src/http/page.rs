//! One `/metrics` render shared by every scraper that waits for it: rendering walks every
//! series, so N scrapers at once must not cost N renders and N copies of the page (200
//! concurrent scrapes of a 12.8 MB page took the daemon past 2.4 GB). A scrape that arrives
//! while a render is under way waits for it and takes its page (single flight): at most one
//! render per format runs at a time, and a page is never older than the render a scraper
//! waited for, so a scrape still sees what happened before it arrived. `[api]
//! metrics_cache_ms` may also let a page serve every scrape for a while (off by default). The
//! page is a reference-counted buffer every response shares; its gzip form is made once.
//! Without `metrics_cache_ms`, no later scrape can use a page once the scrapers that waited
//! for it have taken it, so the cache lets go of it then: at the default caps a page is
//! ~110 MB (BENCHMARKS.md), which would otherwise stay resident between scrapes.
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

/// Rendered pages, one per format (Prometheus text, OpenMetrics).
pub(super) struct PageCache {
    ttl: Duration,
    slots: [Slot; 2],
}

#[derive(Default)]
struct Slot {
    /// Renders finished; read without the lock when a scrape arrives.
    finished: AtomicU64,
    /// Scrapes between their arrival and taking their page.
    waiting: AtomicUsize,
    /// The latest page; held while rendering, so scrapers queue behind the render.
    page: Mutex<Option<Page>>,
}

struct Page {
    /// Which render made it (`Slot::finished` once it was stored).
    seq: u64,
    at: Instant,
    plain: Bytes,
    gzip: Option<Bytes>,
}

impl PageCache {
    pub(super) fn new(ttl: Duration) -> PageCache {
        PageCache {
            ttl,
            slots: Default::default(),
        }
    }

    /// The page of this format, gzipped if asked: the one a render finished after this
    /// scrape arrived (one that was under way, which it waited for), or one younger than the
    /// interval, or else one `render` makes now. `renders` counts the renders.
    pub(super) fn get(
        &self,
        openmetrics: bool,
        gzip: bool,
        renders: &AtomicU64,
        render: impl FnOnce() -> String,
    ) -> Bytes {
        let slot = &self.slots[usize::from(openmetrics)];
        slot.waiting.fetch_add(1, Ordering::AcqRel);
        let seen = slot.finished.load(Ordering::Acquire);
        let mut page = slot.page.lock().unwrap_or_else(|e| e.into_inner());
        let reuse = page
            .as_ref()
            .is_some_and(|p| p.seq > seen || (!self.ttl.is_zero() && p.at.elapsed() < self.ttl));
        if !reuse {
            renders.fetch_add(1, Ordering::Relaxed);
            let seq = slot.finished.load(Ordering::Relaxed) + 1;
            *page = Some(Page {
                seq,
                at: Instant::now(),
                plain: Bytes::from(render()),
                gzip: None,
            });
            slot.finished.store(seq, Ordering::Release);
        }
        let held = page.as_mut().expect("filled above");
        let out = if gzip {
            held.gzip
                .get_or_insert_with(|| Bytes::from(compress(&held.plain)))
                .clone()
        } else {
            held.plain.clone()
        };
        // Counted out only now, under the lock: scrapers that arrived during a render are
        // still counted in, so the page stays for them.
        let last = slot.waiting.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && self.ttl.is_zero() {
            // Nobody waits for it and nobody later may use it: the responses hold it now.
            *page = None;
        }
        out
    }

    /// Whether a page of this format is held (for the tests).
    #[cfg(test)]
    fn holds(&self, openmetrics: bool) -> bool {
        self.slots[usize::from(openmetrics)]
            .page
            .lock()
            .unwrap()
            .is_some()
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
    fn without_an_interval_a_scrape_after_a_render_gets_a_new_one() {
        let cache = PageCache::new(Duration::ZERO);
        let n = AtomicU64::new(0);
        assert_eq!(&cache.get(false, false, &n, || "1\n".into())[..], b"1\n");
        assert_eq!(&cache.get(false, false, &n, || "2\n".into())[..], b"2\n");
        assert_eq!(n.load(Ordering::Relaxed), 2);
        assert!(!cache.holds(false), "a page nobody can use is let go");
        let kept = PageCache::new(Duration::from_secs(60));
        kept.get(false, false, &n, || "3\n".into());
        assert!(
            kept.holds(false),
            "with an interval the page is kept for it"
        );
    }

    #[test]
    fn scrapers_that_arrive_during_a_render_share_it() {
        let cache = std::sync::Arc::new(PageCache::new(Duration::ZERO));
        let n = std::sync::Arc::new(AtomicU64::new(0));
        let started = std::sync::Arc::new(std::sync::Barrier::new(2));
        // One render that takes a while; eight scrapers arrive while it runs.
        let first = {
            let (cache, n, started) = (cache.clone(), n.clone(), started.clone());
            std::thread::spawn(move || {
                cache.get(false, false, &n, || {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(300));
                    "slow page\n".into()
                })
            })
        };
        started.wait();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (cache, n) = (cache.clone(), n.clone());
                std::thread::spawn(move || cache.get(false, false, &n, || "second\n".into()))
            })
            .collect();
        let first = first.join().unwrap();
        for w in waiters {
            let page = w.join().unwrap();
            assert_eq!(page, first);
            assert_eq!(page.as_ptr(), first.as_ptr(), "the same buffer");
        }
        assert_eq!(n.load(Ordering::Relaxed), 1, "one render for nine scrapes");
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
