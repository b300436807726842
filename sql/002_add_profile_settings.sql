-- 002_add_profile_settings.sql  (seed: "Step 1: Add Settings Column to Profiles")
-- Add settings column to profiles table
ALTER TABLE profiles 
ADD COLUMN IF NOT EXISTS settings JSONB DEFAULT '{}'::jsonb;

-- Create index for settings queries
CREATE INDEX IF NOT EXISTS idx_profiles_settings ON profiles USING GIN (settings);

-- Add comment
COMMENT ON COLUMN profiles.settings IS 'User settings and preferences including observability configuration';
