"""Identity and protection: who the caller is and what they may do."""
