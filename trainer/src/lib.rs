//! The cada trainer: the served llama model in candle with LoRA adapters, the training
//! objectives, adapter export in llama.cpp's format, and the safety evaluation. The
//! `cada-trainer` binary is a thin command line over this library.

pub mod adapter;
pub mod agreement;
pub mod chain;
pub mod cli;
pub mod data;
pub mod eval;
pub mod framing;
pub mod loss;
pub mod model;
pub mod optim;
pub mod progress;
pub mod reward;
pub mod run;
pub mod schedule;
