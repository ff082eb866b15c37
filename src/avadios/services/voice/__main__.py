"""Run the voice service: `python -m avadios.services.voice` (the supervisor starts it, one process per replica)."""

from avadios.runtime import main
from avadios.services.voice.service import VoiceRoom

if __name__ == "__main__":
    main("voice", VoiceRoom.create)
