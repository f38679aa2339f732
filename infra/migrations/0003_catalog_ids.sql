-- One id space for every catalog object (organizations, venues, sections, events, ticket types,
-- attractions, discount codes): ids are integers in the partner API and never reused.
CREATE SEQUENCE catalog_ids;
