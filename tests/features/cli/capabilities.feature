Feature: Capabilities and versions
  A client can ask what it talks to: the API version, the engine and its version, the
  models, the pools and the limits.

  Scenario: The capabilities name the API version and the engine's version
    Given orchestra in front of the fake engine
    When I read GET /v1/capabilities
    Then its api_version is this orchestra's API version
    And it lists the engine "llamacpp" in "attached" mode with its engine_version
    And the pool's health reports the same engine version

  @real_engine
  Scenario: The capabilities of an owned real llama-server name its build
    Given orchestra owning the real llama-server
    When I read GET /v1/capabilities
    Then its api_version is this orchestra's API version
    And it lists the engine "llamacpp" in "owned" mode with its engine_version
    And the pool's health reports the same engine version
