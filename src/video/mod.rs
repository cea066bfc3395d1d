//! Video: probing, poster frames and web-playable proxies, all by the ffmpeg
//! command-line tools run as sandboxed children ([`ffmpeg`]).

pub mod ffmpeg;

pub use ffmpeg::{Container, Facts, Ffmpeg, Input, Limits, ProxyPlan, VideoError};
