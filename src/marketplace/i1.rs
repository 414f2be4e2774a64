//! The i1 adapter (placeholder until the adapter lands).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Marketplace, MarketplaceError, Page, PageRequest, StreamSpec};
use crate::config::AccountConfig;
use crate::domain::OrderState;
use crate::http::HttpClient;

pub struct I1 {
    _http: HttpClient,
}

impl I1 {
    pub fn new(
        _account: &AccountConfig,
        http: HttpClient,
        _overrides: &HashMap<String, OrderState>,
    ) -> I1 {
        I1 { _http: http }
    }
}

#[async_trait]
impl Marketplace for I1 {
    fn streams(&self) -> &'static [StreamSpec] {
        &[]
    }

    async fn fetch_page(
        &self,
        _stream: &str,
        _request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        unimplemented!()
    }
}
