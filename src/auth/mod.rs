pub mod groups;
pub mod jwt;
