"""The voice service: speech to text with faster-whisper, text to speech with the platform's native engine."""
