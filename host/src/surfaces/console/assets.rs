//! The console's files, embedded in the binary: it works offline and from any
//! directory, and what is served is what was reviewed.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The app shell, served at `/ui/` to a signed-in browser.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The sign-in page; `{{error}}` is replaced by an escaped message.
pub const SIGN_IN_HTML: &str = include_str!("assets/sign-in.html");

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        /// Every file under `/ui/assets/`, by its path there.
        const FILES: &[(&str, &[u8])] = &[$(($path, include_bytes!(concat!("assets/", $path)))),*];
    };
}

assets![
    "app.js",
    "app.css",
    "favicon.svg",
    "js/api.js",
    "js/charts.js",
    "js/dom.js",
    "js/router.js",
    "js/overview.js",
    "js/operations.js",
    "js/detail.js",
    "js/dead-letters.js",
    "js/dialog.js",
    "js/filters.js",
    "js/list.js",
    "vendor/uPlot.iife.min.js",
    "vendor/uPlot.min.css",
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /ui/assets/{path}`: an embedded file, or 404.
pub async fn serve(Path(path): Path<String>) -> Response {
    match FILES.iter().find(|(p, _)| *p == path) {
        Some((p, bytes)) => super::hardened(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type(p))],
                *bytes,
            )
                .into_response(),
            // Revalidated on each load: a new binary's files replace the old at once.
            "no-cache",
        ),
        None => super::hardened(StatusCode::NOT_FOUND.into_response(), "no-store"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                on_disk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_script_and_style_on_disk_is_embedded() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/surfaces/console/assets");
        let mut files = Vec::new();
        on_disk(&dir, "", &mut files);
        for f in files {
            let served = FILES.iter().any(|(p, _)| *p == f);
            let page_or_doc = f.ends_with(".html") || f.ends_with(".md") || f.ends_with("LICENSE");
            assert!(served || page_or_doc, "{f} is in assets/ but not embedded");
        }
    }

    #[test]
    fn pages_name_no_other_origin() {
        for (path, bytes) in FILES.iter().filter(|(p, _)| !p.starts_with("vendor/")) {
            // An SVG names its namespace by URL; nothing is fetched from it.
            let text =
                String::from_utf8_lossy(bytes).replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names another origin"
            );
        }
        for page in [INDEX_HTML, SIGN_IN_HTML] {
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
    }
}
