//! The page evaluation that collects [`PageFacts`](super::PageFacts).

use super::signals::INTERSTITIAL_MAX_CHARS;
use super::DetectionConfig;

/// Longest HTML handed back for the vendor markers (JavaScript string units).
const HTML_MAX_LEN: usize = 2_000_000;

/// A JavaScript expression that, evaluated in the page's main frame (CDP
/// `Runtime.evaluate` with `returnByValue`), returns a plain object that
/// deserializes into [`PageFacts`](super::PageFacts).
///
/// It never throws: each read is guarded, so a missing body or document
/// element leaves its field empty and an invalid selector from the user's
/// config is skipped. The selectors are embedded as a JSON literal. It reads
/// `textContent` and `outerHTML`, runs one `querySelector` per selector and
/// one `querySelectorAll` for the meta tags; `innerText` (which forces a
/// layout) only when `with_inner_text`, and then, on an interstitial (visible
/// text shorter than [`INTERSTITIAL_MAX_CHARS`] with white space collapsed),
/// the HTML itself for the vendor markers.
pub fn collect_script(config: &DetectionConfig, with_inner_text: bool) -> String {
    let selectors: Vec<&str> =
        config.challenge_selectors.iter().map(String::as_str).filter(|s| !s.trim().is_empty()).collect();
    // JSON is valid JavaScript since ES2019; escaping U+2028/U+2029 keeps it
    // valid for any parser.
    let selectors = serde_json::to_string(&selectors)
        .unwrap_or_else(|_| "[]".to_string())
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let inner_text = if with_inner_text {
        format!(
            "try {{ const b = document.body; out.innerText = b ? String(b.innerText || \"\") : \"\"; }} catch (e) {{}}
  try {{
    if (out.innerText !== null && out.innerText.replace(/\\s+/g, \" \").trim().length < {INTERSTITIAL_MAX_CHARS}) {{
      const h = String(document.documentElement.outerHTML || \"\");
      if (h.length <= {HTML_MAX_LEN}) out.html = h;
    }}
  }} catch (e) {{}}"
        )
    } else {
        String::new()
    };
    format!(
        r#"(() => {{
  const out = {{ title: "", text: "", htmlLength: 0, matchedSelectors: [], metaRefreshUrls: [], innerText: null, html: null }};
  try {{ out.title = String(document.title || ""); }} catch (e) {{}}
  try {{ const b = document.body; out.text = b ? String(b.textContent || "") : ""; }} catch (e) {{}}
  try {{ const d = document.documentElement; out.htmlLength = d ? Number(d.outerHTML.length) || 0 : 0; }} catch (e) {{}}
  for (const s of {selectors}) {{
    try {{ if (document.querySelector(s)) out.matchedSelectors.push(s); }} catch (e) {{}}
  }}
  try {{
    for (const m of Array.from(document.querySelectorAll("meta[http-equiv]"))) {{
      try {{
        if (String(m.getAttribute("http-equiv") || "").trim().toLowerCase() !== "refresh") continue;
        const r = /url\s*=\s*([\s\S]*)$/i.exec(String(m.getAttribute("content") || ""));
        const u = r ? r[1].trim().replace(/^['"]|['"]$/g, "").trim() : "";
        if (u) out.metaRefreshUrls.push(u);
      }} catch (e) {{}}
    }}
  }} catch (e) {{}}
  {inner_text}
  return out;
}})()"#
    )
}
