//! The integration tests, one binary (as zero2prod's `tests/api/`): one
//! build and link instead of one per file, and helpers shared without
//! `dead_code` allowances. Each module is one area; `common` starts the
//! service through the same code as `main` ([`mediaflow::startup::Application`]).

#[macro_use]
mod common;

mod assets;
mod boxes;
mod client;
mod faults;
mod observability;
mod openapi;
mod originals;
mod process;
mod render_limits;
mod s3_config;
mod scale_out;
mod storage;
mod thumbs;
mod trust;
mod uploads;
mod video;
mod video_service;
