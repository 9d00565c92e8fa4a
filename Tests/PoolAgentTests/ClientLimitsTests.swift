// The client limits as a value: every refusal, and the counts as clients come and go.

import Testing
@testable import PoolAgent

@Suite struct ClientLimitsTests {
    @Test func theAgentLimitCountsEverySocketLoggedInOrNot() {
        var limits = ClientLimits(maxClientConnections: 3, maxLoginClients: 10, maxUserConnections: 0)
        #expect(limits.accept(fd: 10) == nil)
        #expect(limits.accept(fd: 11) == nil)
        #expect(limits.admit(.init(pool: "app", user: "alice"), poolLimit: 0) == nil)
        #expect(limits.accept(fd: 12) == nil)
        #expect(limits.accept(fd: 13) == .agent(limit: 3))
        #expect(limits.open == 3 && limits.loggingIn == 2)
        limits.left(.init(pool: "app", user: "alice"))
        #expect(limits.accept(fd: 13) == nil)
        #expect(limits.refused == ["max_client_conn": 1])
        #expect(limits.clients(of: "app") == 0)
    }

    @Test func loginsInProgressAreCappedAndLeaveTheCountWhenAdmittedOrGone() {
        var limits = ClientLimits(maxClientConnections: 100, maxLoginClients: 2, maxUserConnections: 0)
        #expect(limits.accept(fd: 10) == nil)
        #expect(limits.accept(fd: 11) == nil)
        #expect(limits.accept(fd: 12) == .logins(limit: 2))
        #expect(limits.admit(.init(pool: "app", user: "bob"), poolLimit: 0) == nil)
        #expect(limits.accept(fd: 12) == nil)
        limits.left(nil)
        #expect(limits.loggingIn == 1 && limits.open == 2)
    }

    @Test func poolAndUserLimitsRefuseAtAdmissionAndKeepTheClientCountedAsLoggingIn() {
        var limits = ClientLimits(maxClientConnections: 100, maxLoginClients: 100, maxUserConnections: 2)
        for _ in 0..<4 { #expect(limits.accept(fd: 10) == nil) }
        #expect(limits.admit(.init(pool: "a", user: "u"), poolLimit: 1) == nil)
        #expect(limits.admit(.init(pool: "a", user: "v"), poolLimit: 1) == .pool(name: "a", limit: 1))
        #expect(limits.admit(.init(pool: "b", user: "u"), poolLimit: 0) == nil)
        #expect(limits.admit(.init(pool: "c", user: "u"), poolLimit: 0) == .user(name: "u", limit: 2))
        #expect(limits.busiestUser?.name == "u" && limits.busiestUser?.clients == 2)
        // The two refused ones are still logging in until they close.
        #expect(limits.loggingIn == 2)
        limits.left(nil)
        limits.left(nil)
        limits.left(.init(pool: "a", user: "u"))
        #expect(limits.accept(fd: 10) == nil)
        #expect(limits.admit(.init(pool: "c", user: "u"), poolLimit: 0) == nil, "u has one client again")
        #expect(limits.open == 2 && limits.loggingIn == 0)
        #expect(limits.refused == ["max_clients": 1, "max_user_connections": 1])
    }

    @Test func descriptorsAboveTheCeilingAreKeptForServers() {
        var limits = ClientLimits(maxClientConnections: 100, maxLoginClients: 100, maxUserConnections: 0)
        limits.reserveDescriptors(38, limit: 100)
        #expect(limits.accept(fd: 61) == nil)
        #expect(limits.accept(fd: 62) == .descriptors(limit: 38))
        #expect(limits.accept(fd: 62)?.error.sqlState == "53300")
        #expect(limits.accept(fd: 62)?.error.message == "sorry, too many clients already")
    }
}
