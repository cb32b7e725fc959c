Feature: MVP acceptance
  orchestra runs on one box in front of llama.cpp's llama-server. It starts on loopback,
  takes a task and streams its tokens, cancels at once, refuses honestly when its queue is
  full, and gives the same bytes for the same seed.

  Scenario: It starts on loopback and answers health and capabilities
    Given orchestra in front of the fake engine
    Then it listens on 127.0.0.1
    And GET /health answers 200 with the status "ok"
    And GET /v1/capabilities answers 200 with an api_version
    And the default configuration binds to 127.0.0.1 only

  Scenario: A submitted task streams started, its tokens, then end
    Given orchestra in front of the fake engine
    When I submit the prompt "Once upon a time" for 8 tokens
    Then the task is admitted at queue position 0 with its stream URL
    And its stream is started, 8 tokens, then end
    And the end event counts 8 tokens out

  Scenario: No token is sent after a cancel returns
    Given orchestra in front of the fake engine, which sends a token every 10 ms
    And a task of 500 tokens whose stream I am reading
    When I have read 3 tokens and cancel the task
    Then the cancel answers 200 with the state "cancelled"
    And the stream ends with the error CANCELLED
    And no token of the task is sent after the cancel returned
    And the engine slot is free again

  Scenario: A full queue refuses with 429 and says when to come back
    Given orchestra in front of the fake engine with 1 slot and a queue of 2 places
    And a task holding the only slot
    And 2 tasks waiting in the queue
    When I submit one more task
    Then it is refused with 429 ADMISSION_REJECT
    And the body says it is retriable, with a retry_after_ms and the policy_label "queue_capacity"
    And the headers Retry-After and X-Backoff-Ms agree with retry_after_ms
    And the waiting tasks still run to their end once the slot is free

  Scenario: The same seed twice gives the same bytes on the fake engine
    Given orchestra in front of the fake engine
    When I run the prompt "determinism" for 16 tokens with the seed 42 twice
    Then both runs generated the same bytes
    And both runs generated 16 tokens

  @real_engine
  Scenario: The same seed twice gives the same bytes on the real llama-server
    Given orchestra owning the real llama-server
    When I run the prompt "Once upon a time" for 16 tokens with the seed 1 twice
    Then both runs generated the same bytes
    And both runs generated 16 tokens
