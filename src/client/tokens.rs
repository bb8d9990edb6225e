//! Token management through the API (admin only).

use super::{Client, ClientError};
use crate::api::v1beta1::tokens::{TokenCreated, TokenInfo, TokenList, TokenRequest};

impl Client {
    /// Creates a token; the answer holds the token, shown this once.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated, ClientError> {
        let resp = self
            .http
            .post(self.url("/api/v1beta1/tokens"))
            .json(req)
            .send()
            .await?;
        serde_json::from_value(Self::answer(resp).await?)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Every token, without its secret.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let resp = self
            .http
            .get(self.url("/api/v1beta1/tokens"))
            .send()
            .await?;
        let list: TokenList = serde_json::from_value(Self::answer(resp).await?)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(list.items)
    }

    /// Revokes the token named `name`.
    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo, ClientError> {
        let url = format!(
            "/api/v1beta1/tokens/{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = self.http.delete(self.url(&url)).send().await?;
        serde_json::from_value(Self::answer(resp).await?)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }
}
