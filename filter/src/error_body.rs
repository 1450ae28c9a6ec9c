//! Error responses in the shape OpenAI clients understand:
//! `{"error":{"message":"...","type":"...","code":N}}`.

use serde_json::json;

/// JSON body for a local reply with `status`.
pub fn error_json(status: u32, message: &str) -> Vec<u8> {
    let kind = match status {
        400 | 413 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    json!({ "error": { "message": message, "type": kind, "code": status } })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_escaped_and_typed() {
        let body = error_json(400, "bad \"prompt\"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "bad \"prompt\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], 400);
        let v: serde_json::Value = serde_json::from_slice(&error_json(500, "x")).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
    }
}
