-- The system_events table, exactly the web application's schema. The daemon creates it when
-- it is missing with this very statement, and uses an existing one of this shape as it is
-- (ExamplesTests holds the two to each other, and writes to a table made by this file).
CREATE TABLE IF NOT EXISTS system_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type VARCHAR(100) NOT NULL,
    source VARCHAR(100) NOT NULL,
    severity VARCHAR(20) DEFAULT 'info',
    payload JSONB NOT NULL,
    timestamp TIMESTAMP DEFAULT NOW(),
    metadata JSONB DEFAULT '{}'
);
