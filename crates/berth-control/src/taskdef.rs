//! Task definitions: validation of RegisterTaskDefinition input and the stored model.
