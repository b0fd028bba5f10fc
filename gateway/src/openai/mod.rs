//! OpenAI wire format: request parsing/validation and response objects.

pub mod chat;
pub mod completion;
pub mod fields;
pub mod response;
pub mod sampling;
