"""One attempt of a money movement, shared by scheduled transfers and recurring payments."""
