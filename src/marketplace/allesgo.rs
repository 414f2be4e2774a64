//! The allesgo adapter (placeholder until the adapter lands).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Marketplace, MarketplaceError, Page, PageRequest, StreamSpec};
use crate::config::AccountConfig;
use crate::domain::OrderState;
use crate::http::HttpClient;

pub struct Allesgo {
    _http: HttpClient,
}

impl Allesgo {
    pub fn new(
        _account: &AccountConfig,
        http: HttpClient,
        _overrides: &HashMap<String, OrderState>,
    ) -> Allesgo {
        Allesgo { _http: http }
    }
}

#[async_trait]
impl Marketplace for Allesgo {
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
