//! `prep split`.

pub mod phash;
