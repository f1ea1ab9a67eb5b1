//! Observations out to people and machines: text lines and the summary,
//! JSON lines (docs/json-schema.md), Prometheus metrics. Renderers read the
//! model; nothing here changes it.
pub mod clock;
pub mod escape;
pub mod html;
pub mod jsonline;
pub mod metrics;
pub mod render;
