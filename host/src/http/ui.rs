//! The web page: a few static files compiled into the binary (no CDN, no framework, nothing
//! fetched from elsewhere), served at `/` and `/ui/…` under the same access rule as `/api/*`
//! (it shows the same data). The page names its files and reads the `/api/*` JSON by
//! relative URLs only, so a hub that serves the same files under a prefix beside a node's
//! API (or its own of the same shapes) serves the same page. Views are hash routes
//! (`#/map`, `#/service/<name>`, `#/incidents`, `#/incident/<id>`, `#/plugins`): a link to
//! one can be pasted.

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Asset {
    pub path: &'static str,
    pub kind: &'static str,
    pub body: &'static [u8],
}

/// Every file of the page, by the path it is served at.
pub(super) const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        kind: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        kind: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        kind: "text/css; charset=utf-8",
        body: include_bytes!("ui/style.css"),
    },
];

/// What the page may load and run: its own files and the API, nothing inline, no frames.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file served at `path`.
pub(super) fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Bytes the page adds to the binary.
#[cfg(test)]
pub(super) fn size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}
