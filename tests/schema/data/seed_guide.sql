-- A database built by hand from the seed guide (docs: database-setup.md), steps 1-3 and the
-- cleanup function, as a user would paste them; profiles is the user's own pre-existing table.
CREATE TABLE profiles (id UUID PRIMARY KEY, username TEXT);

-- Add settings column to profiles table
ALTER TABLE profiles 
ADD COLUMN IF NOT EXISTS settings JSONB DEFAULT '{}'::jsonb;

-- Create index for settings queries
CREATE INDEX IF NOT EXISTS idx_profiles_settings ON profiles USING GIN (settings);

-- Add comment
COMMENT ON COLUMN profiles.settings IS 'User settings and preferences including observability configuration';

-- Enable UUID extension (if not already enabled)
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

-- Create traces table
CREATE TABLE IF NOT EXISTS traces (
    trace_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id VARCHAR(255) NOT NULL,
    execution_id VARCHAR(255) UNIQUE NOT NULL,
    user_id UUID REFERENCES profiles(id) ON DELETE SET NULL,
    
    -- Query/Input
    query TEXT,
    
    -- Timing
    started_at TIMESTAMP NOT NULL DEFAULT NOW(),
    completed_at TIMESTAMP,
    total_duration_ms INTEGER DEFAULT 0,
    
    -- Status
    status VARCHAR(50) NOT NULL DEFAULT 'running',
    error TEXT,
    
    -- Metrics
    total_cost DECIMAL(10, 6) DEFAULT 0.0,
    total_tokens JSONB DEFAULT '{}'::jsonb,
    
    -- Metadata
    metadata JSONB DEFAULT '{}'::jsonb,
    
    CONSTRAINT valid_status CHECK (status IN ('running', 'completed', 'failed', 'cancelled'))
);

-- Create indexes
CREATE INDEX IF NOT EXISTS idx_traces_workflow_id ON traces(workflow_id);
CREATE INDEX IF NOT EXISTS idx_traces_execution_id ON traces(execution_id);
CREATE INDEX IF NOT EXISTS idx_traces_user_id ON traces(user_id);
CREATE INDEX IF NOT EXISTS idx_traces_started_at ON traces(started_at DESC);
CREATE INDEX IF NOT EXISTS idx_traces_status ON traces(status);
CREATE INDEX IF NOT EXISTS idx_traces_workflow_started ON traces(workflow_id, started_at DESC);
CREATE INDEX IF NOT EXISTS idx_traces_metadata_gin ON traces USING GIN (metadata);
CREATE INDEX IF NOT EXISTS idx_traces_total_tokens_gin ON traces USING GIN (total_tokens);

-- Create spans table
CREATE TABLE IF NOT EXISTS spans (
    span_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id UUID NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
    parent_span_id UUID REFERENCES spans(span_id) ON DELETE SET NULL,
    
    -- Identification
    span_type VARCHAR(50) NOT NULL,
    name VARCHAR(255) NOT NULL,
    
    -- Status
    status VARCHAR(50) NOT NULL DEFAULT 'pending',
    
    -- Timing
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    duration_ms INTEGER DEFAULT 0,
    
    -- Inputs/Outputs
    inputs JSONB DEFAULT '{}'::jsonb,
    outputs JSONB DEFAULT '{}'::jsonb,
    
    -- GenAI-specific metadata
    tokens JSONB DEFAULT '{}'::jsonb,
    cost DECIMAL(10, 6) DEFAULT 0.0,
    model VARCHAR(255),
    provider VARCHAR(100),
    
    -- Error tracking
    error TEXT,
    error_type VARCHAR(100),
    error_stack TEXT,
    
    -- API-specific metadata
    api_limits JSONB DEFAULT '{}'::jsonb,
    retry_count INTEGER DEFAULT 0,
    timeout INTEGER,
    
    -- Evaluation metadata
    evaluation JSONB DEFAULT '{}'::jsonb,
    
    -- Additional metadata
    metadata JSONB DEFAULT '{}'::jsonb,
    
    -- Child spans
    child_spans TEXT[] DEFAULT '{}',
    
    CONSTRAINT valid_span_status CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'))
);

-- Create indexes
CREATE INDEX IF NOT EXISTS idx_spans_trace_id ON spans(trace_id);
CREATE INDEX IF NOT EXISTS idx_spans_parent_span_id ON spans(parent_span_id);
CREATE INDEX IF NOT EXISTS idx_spans_span_type ON spans(span_type);
CREATE INDEX IF NOT EXISTS idx_spans_status ON spans(status);
CREATE INDEX IF NOT EXISTS idx_spans_started_at ON spans(started_at);
CREATE INDEX IF NOT EXISTS idx_spans_trace_started ON spans(trace_id, started_at);
CREATE INDEX IF NOT EXISTS idx_spans_tokens_gin ON spans USING GIN (tokens);
CREATE INDEX IF NOT EXISTS idx_spans_metadata_gin ON spans USING GIN (metadata);

CREATE OR REPLACE FUNCTION cleanup_old_traces(retention_days INTEGER DEFAULT 90)
RETURNS INTEGER AS $$
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM traces
    WHERE started_at < NOW() - (retention_days || ' days')::INTERVAL
    AND status = 'completed';
    
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
$$ LANGUAGE plpgsql;

-- Run cleanup (manually or via cron)
-- SELECT cleanup_old_traces(90);
