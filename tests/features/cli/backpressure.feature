Feature: Reliable submit and stream under backpressure
  A client that meets a full queue is told when to come back (429 with retry_after_ms);
  the SDK's retry waits exactly that long and tries again, and the task then runs.

  Scenario: A client that retries gets in after the advised delay
    Given orchestra in front of the fake engine with 1 slot and a queue of 1 place
    And a task holding the only slot
    And 1 task waiting in the queue
    And a submission now is refused with 429, advising a delay
    When a client with retries on submits a task
    Then the server refuses the client's first try with 429
    When the slot and the queue are freed
    Then the client's task is admitted after waiting at least the advised delay
    And the client's task streams started, 4 tokens, then end
