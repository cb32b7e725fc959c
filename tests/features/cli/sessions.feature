Feature: Session reuse and cancel
  Every turn of a session runs on the same engine slot, so the engine can reuse the
  conversation so far; a turn can be cancelled, and the session goes on.

  Scenario: Two turns of a session run on the same slot and reuse its cache
    Given orchestra in front of the fake engine with 2 slots
    When I send the turn "You are a helpful assistant. User: name three rivers." in the session "agent-7"
    And I send a second turn continuing the conversation in the session "agent-7"
    Then both turns ran on the same engine slot
    And the session "agent-7" reports 2 turns on that slot, with cached tokens and a warm cache

  Scenario: A cancelled turn ends, and the next turn of the session runs on the same slot
    Given orchestra in front of the fake engine with 2 slots
    And a turn of the session "agent-7" that holds its slot
    When I cancel that turn
    Then its stream ends with the error CANCELLED
    And the session "agent-7" has no turn in progress
    And the next turn of the session "agent-7" runs to its end on the same slot
