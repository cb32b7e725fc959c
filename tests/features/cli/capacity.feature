Feature: Concurrency derived from capacity
  GET /v1/capabilities says how many engine slots there are and how many tasks may wait.
  A client may keep exactly that many tasks in flight: all are admitted, one more is
  refused at once.

  Scenario: Exactly slots plus queue places are admitted, one more is refused
    Given orchestra in front of the fake engine with 2 slots and a queue of 3 places
    When I read the capacity from GET /v1/capabilities
    Then it says 2 slots and 3 queue places
    When I submit as many tasks that hold their slot as the capacity says
    Then every one of them is admitted
    And 2 of them are running and 3 are waiting
    When I submit one more task
    Then it is refused with 429 ADMISSION_REJECT
