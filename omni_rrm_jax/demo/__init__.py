"""The main job: every stage of the mission at toy scale, one command."""
