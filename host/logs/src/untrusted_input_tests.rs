//! The miner against what any process on the node may write. stdout/stderr capture is on for
//! every process by default, so bytes that are not UTF-8, multi-byte characters where ASCII is
//! usual, binary streams, huge, empty and separator-only lines must neither panic nor keep
//! the well-formed lines among them from being mined.
use super::drain::{mask_token, tokenize};
use super::files::{LogFile, Tailer};
use super::lines::{LineConfig, LineSplitter, StreamKey, clean};
use super::tests::chunk;
use super::*;

const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;

/// xorshift64: deterministic pseudo-random input without a dependency.
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Random bytes and [`PIECES`] mixed: valid multi-byte characters next to digits, level
    /// fields and separators, cut sequences next to ASCII.
    fn mixed(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            if self.below(3) == 0 {
                let n = 1 + self.below(4);
                out.extend(self.bytes(n));
            } else {
                out.extend_from_slice(PIECES[self.below(PIECES.len())].as_bytes());
            }
        }
        out
    }

    /// Valid UTF-8 made of [`PIECES`] only.
    fn text(&mut self, max_pieces: usize) -> String {
        (0..self.below(max_pieces + 1))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }
}

/// What trips byte-index code: characters of every width (some next to digits, 5 bytes like a
/// glog `E0102`), characters whose case mapping changes length, level fields and masking
/// syntax, the miner's own wildcard, separators, control and escape bytes.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "€", "é", "错误", "😀", "€12", "é123", "错12", "😀1", "E0102", "W1231", "İ", "ẞ", "ǅ",
    "e\u{301}", "\u{200d}", "\u{feff}", "\u{3000}", "\u{2028}", "\u{fffd}", "level=", "lvl:",
    "\"level\":\"", "severity=€", "error", "ERROR", "Error:", "timed", "out", "TypeError",
    "=", ":", ",", ";", "/s", "12/s", "0x", "0x€", "12ms", "1m30s", "€ms", "1.2.3.4:80",
    "[::1]:443", "/24", "<*>", "\u{0}*", "(", ")", "[", "]", "\"", "'", " ", " ", " ", "\t",
    "\n", "\r", "\x1b[31m", "\x1b", "\0", "7", "42", "-", ".", "_",
];

/// (template, count, is_error) of a service in the first minute, most lines first.
fn mined(m: &LogMiner, service: &str) -> Vec<(String, u64, bool)> {
    m.templates(Some(service), T0, T0 + MINUTE_MS)
        .into_iter()
        .map(|t| (t.template, t.count, t.is_error))
        .collect()
}

fn has(mined: &[(String, u64, bool)], template: &str, count: u64, is_error: bool) -> bool {
    mined
        .iter()
        .any(|(t, n, e)| t == template && *n == count && *e == is_error)
}

#[test]
fn a_line_starting_with_a_multibyte_character_is_mined() {
    // The issue: `printf '€12 paid for order 7\n'` ended the daemon ('€12' is 5 bytes, the
    // length of a glog prefix, which was then sliced at byte 1).
    let mut m = LogMiner::new(LogMinerConfig::default());
    for order in [7, 8, 9] {
        let line = format!("€12 paid for order {order}\n");
        m.observe_chunk("shop", &chunk(7, 1, line.as_bytes(), false), T0);
    }
    assert_eq!(
        mined(&m, "shop"),
        [("€12 paid for order <*>".to_string(), 3, false)]
    );
    // A first word of 5 bytes of each character width; glog prefixes still read.
    for word in ["é123", "€12", "错12", "😀1"] {
        assert_eq!(word.len(), 5);
        assert_eq!(level(&format!("{word} disk slow")), None, "{word}");
    }
    assert_eq!(level("E0102 12:00:00.1 1 x.go:1] lost"), Some(Level::Error));
    assert_eq!(level("W0102 12:00:00.1 1 x.go:1] slow"), Some(Level::Warn));
}

/// What a node's processes may write besides log lines; each ends with a newline.
fn hostile_payloads() -> Vec<Vec<u8>> {
    let mut gzip = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
    gzip.extend(XorShift::seeded(99).bytes(600));
    let many_tokens: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
    let mut payloads = vec![
        // Invalid UTF-8: stray and cut sequences, overlong, surrogate, 5-byte forms.
        b"\xff\xfe\xfd abc \xc3\x28 \xe2\x82 \xf0\x9f\x98".to_vec(),
        b"\xc0\xaf \xed\xa0\x80 \xf8\x88\x80\x80\x80 \x80\x80".to_vec(),
        gzip,
        // Very long: one word of multi-byte characters (the 4096-byte cap falls inside
        // one), one ASCII word, and thousands of tokens.
        "€".repeat(10_000).into_bytes(),
        "a".repeat(100_000).into_bytes(),
        many_tokens.join(" ").into_bytes(),
        // Empty and separator-only lines.
        Vec::new(),
        b"\r".to_vec(),
        b"   \t  ".to_vec(),
        b",,,,;;;;::::||||".to_vec(),
        "\u{3000}\u{3000}\u{2028}".as_bytes().to_vec(),
        b"\x1b[31m\x1b[0m".to_vec(),
        b"\0\0\0\x07\x08".to_vec(),
        b"\x1b[999999999999".to_vec(),
        // Text whose case mapping changes length, combining marks, right-to-left.
        "İİİ ẞ ǅ 12".as_bytes().to_vec(),
        "e\u{301}\u{301} \u{200d}\u{fe0f}".as_bytes().to_vec(),
        "مرحبا 42 خطأ".as_bytes().to_vec(),
        "level=€ lvl:错误 severity=\"😀\" E€12 0x€ €ms"
            .as_bytes()
            .to_vec(),
    ];
    for p in &mut payloads {
        p.push(b'\n');
    }
    payloads
}

/// Well-formed lines, ASCII and not, with a number that varies (k) and their templates.
fn good_lines(k: usize) -> [(i32, String); 5] {
    [
        (2, format!("ERROR upstream timed out after {k} ms\n")),
        (1, format!("INFO request served in {k} ms\n")),
        (1, format!("€12 paid for order {k}\n")),
        (1, format!("错误：数据库连接超时 {k} 次\n")),
        (1, format!("エラー: 接続がタイムアウトしました {k} 秒\n")),
    ]
}

const GOOD_TEMPLATES: [(&str, bool); 5] = [
    ("ERROR upstream timed out after <*> ms", true),
    ("INFO request served in <*> ms", false),
    ("€12 paid for order <*>", false),
    ("错误：数据库连接超时 <*> 次", false),
    ("エラー: 接続がタイムアウトしました <*> 秒", false),
];

#[test]
fn good_lines_among_hostile_bytes_are_still_mined() {
    let mut m = LogMiner::new(LogMinerConfig::default());
    let hostile = hostile_payloads();
    let mut rng = XorShift::seeded(7);
    let rounds = 300;
    for i in 0..rounds {
        let ts = T0 + i as u64;
        // The same process and streams as the good lines, each write ending its line.
        let h = &hostile[i % hostile.len()];
        m.observe_chunk("shop", &chunk(1, 1 + (i % 2) as i32, h, false), ts);
        for (fd, line) in good_lines(i) {
            m.observe_chunk("shop", &chunk(1, fd, line.as_bytes(), false), ts);
        }
        let n = rng.below(300);
        let mut noise = rng.bytes(n);
        noise.push(b'\n');
        m.observe_chunk("shop", &chunk(1, 1, &noise, false), ts);
        // Other processes of the service: random bytes without a newline, and cut writes.
        let n = rng.below(200);
        let partial = rng.bytes(n);
        m.observe_chunk("shop", &chunk(2, 1 + (i % 2) as i32, &partial, false), ts);
        let cut = rng.mixed(200);
        m.observe_chunk("shop", &chunk(3, 2, &cut, true), ts);
    }
    m.tick(T0 + 10_000);
    let got = mined(&m, "shop");
    for (template, is_error) in GOOD_TEMPLATES {
        assert!(
            has(&got, template, rounds as u64, is_error),
            "{template:?} × {rounds} not mined; got {:?}",
            &got[..got.len().min(10)]
        );
    }
    let s = m.stats();
    assert!(s.lines > 5 * rounds as u64, "{s:?}");
    assert!(s.truncated_lines > 0, "{s:?}");
    assert!(s.templates <= LogMinerConfig::default().max_templates_per_service as u64);
    for t in m.templates(None, 0, u64::MAX) {
        assert!(
            !t.template.contains(['\n', '\0', '\x1b']),
            "{:?}",
            t.template
        );
    }
}

#[test]
fn random_input_never_panics_at_any_stage() {
    // (max_line_bytes, max_sample_bytes): cuts that land inside characters.
    let caps = [(16, 0), (17, 1), (33, 5), (64, 23), (4096, 512)];
    let mut miners: Vec<LogMiner> = caps
        .iter()
        .map(|&(line, sample)| {
            LogMiner::new(LogMinerConfig {
                max_line_bytes: line,
                max_sample_bytes: sample,
                max_templates_per_service: 8,
                max_services: 3,
                max_streams: 4,
                ..LogMinerConfig::default()
            })
            .keep_samples(true)
        })
        .collect();
    for seed in 0..3000u64 {
        let mut rng = XorShift::seeded(seed);
        let bytes = if seed % 2 == 0 {
            rng.mixed(400)
        } else {
            let n = rng.below(400);
            rng.bytes(n)
        };
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        let text = rng.text(40);
        for s in [lossy.as_str(), text.as_str()] {
            level(s);
            is_error_line(s);
            tokenize(s, 1 + rng.below(70));
            for tok in s.split_whitespace() {
                mask_token(tok);
            }
            clean(s.as_bytes());
        }
        // The splitter over random chunking, caps and cut flags.
        let mut splitter = LineSplitter::new(LineConfig {
            max_line_bytes: 1 + rng.below(40),
            flush_after_ms: 5,
            max_streams: 2,
        });
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(1 + rng.below(rest.len()));
            let key = StreamKey {
                tgid: rng.below(3) as u32,
                fd: 1,
            };
            splitter.push(key, &0u8, 0, piece, rng.below(4) == 0, &mut out);
            rest = tail;
        }
        splitter.flush_idle(10, &mut out);
        assert!(out.iter().all(|l| !l.text.contains('\n')));

        let service = format!("svc{}", seed % 5);
        let fd = 1 + (seed % 2) as i32;
        let ts = T0 + seed;
        for m in &mut miners {
            m.observe(&service, Stream::Stdout, ts, &text);
            m.observe(&service, Stream::Stdout, ts, &lossy);
            m.observe_chunk(
                &service,
                &chunk(seed as u32 % 7, fd, &bytes, seed % 3 == 0),
                ts,
            );
            if seed % 100 == 0 {
                m.tick(ts);
            }
        }
    }
    for (m, &(_, max_sample)) in miners.iter_mut().zip(&caps) {
        // Still mining after all that (a line within the smallest cap, 16 bytes).
        for k in [3, 14, 159] {
            m.observe("after", Stream::Stderr, T0, &format!("ERROR db down {k}"));
        }
        assert!(
            has(&mined(m, "after"), "ERROR db down <*>", 3, true),
            "{:?}",
            mined(m, "after")
        );
        for t in m.templates(None, 0, u64::MAX) {
            assert!(t.sample.len() <= max_sample, "{t:?}");
        }
        m.error_summary(None, 0, u64::MAX, 10);
        let s = m.stats();
        assert!(s.services <= 3 && s.templates <= 3 * 8, "{s:?}");
    }
}

#[test]
fn a_line_written_in_pieces_is_joined_before_decoding() {
    let line = "€12 paid for order 7 — 错误 😀\n".as_bytes();
    for at in 0..=line.len() {
        // Every split, including inside each multi-byte character.
        let mut s = LineSplitter::new(LineConfig::default());
        let mut out = Vec::new();
        let key = StreamKey { tgid: 1, fd: 1 };
        s.push(key, &0u8, 0, &line[..at], false, &mut out);
        s.push(key, &0u8, 0, &line[at..], false, &mut out);
        let texts: Vec<&str> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["€12 paid for order 7 — 错误 😀"], "split at {at}");
    }
}

#[test]
fn cuts_inside_multibyte_characters_keep_whole_ones() {
    // The splitter's cap counts bytes: a cut inside '€' leaves U+FFFD, never a panic.
    let mut s = LineSplitter::new(LineConfig {
        max_line_bytes: 4,
        ..LineConfig::default()
    });
    let mut out = Vec::new();
    s.push(
        StreamKey { tgid: 1, fd: 1 },
        &0u8,
        0,
        "€€€\n".as_bytes(),
        false,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert!(
        out[0].truncated && out[0].text.starts_with('€'),
        "{:?}",
        out[0]
    );

    // The miner's line and sample cuts fall back to a character boundary.
    let line = "€".repeat(10);
    for max_sample in 0..=8 {
        let mut m = LogMiner::new(LogMinerConfig {
            max_line_bytes: 16,
            max_sample_bytes: max_sample,
            ..LogMinerConfig::default()
        })
        .keep_samples(true);
        m.observe("svc", Stream::Stdout, T0, &line);
        let t = m.templates(None, 0, u64::MAX);
        assert_eq!(t[0].template, "€".repeat(5), "cut at 16 bytes: 5 whole '€'");
        assert_eq!(t[0].sample, "€".repeat(max_sample / 3));
        assert_eq!(m.stats().truncated_lines, 1);
    }
}

#[test]
fn tailed_files_with_hostile_bytes() {
    let dir = std::env::temp_dir().join(format!("sonde-untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.log");
    std::fs::write(&path, "").unwrap();
    let mut miner = LogMiner::new(LogMinerConfig::default());
    let mut tail = Tailer::new(
        &[LogFile {
            path: path.clone(),
            service: "app".into(),
        }],
        4096,
    );
    let mut content = b"\x1b[31mERROR\x1b[0m disk \xff full on /dev/sda1\r\n".to_vec();
    content.extend_from_slice(b"\0\0\0\n\n   \n");
    content.extend_from_slice("€12 paid for order 7\n€12 paid for order 8\n".as_bytes());
    content.extend(XorShift::seeded(3).bytes(2000));
    content.extend_from_slice("\n错误：数据库连接超时 3 次\n".as_bytes());
    std::fs::write(&path, &content).unwrap();
    tail.poll(&mut miner, T0);
    std::fs::remove_dir_all(&dir).unwrap();

    let got = mined(&miner, "app");
    assert!(has(&got, "€12 paid for order <*>", 2, false), "{got:?}");
    assert!(
        has(&got, "ERROR disk \u{fffd} full on /dev/sda1", 1, true),
        "{got:?}"
    );
    assert!(
        has(&got, "错误：数据库连接超时 <*> 次", 1, false),
        "{got:?}"
    );
    for (t, _, _) in &got {
        assert!(!t.contains(|c: char| c.is_control()), "{t:?}");
    }
}
